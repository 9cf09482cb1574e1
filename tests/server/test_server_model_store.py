"""LoadedModel's request batching and ModelStore's choice of version, with a stand-in model (no TensorFlow)."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from server.model_store import MAX_BATCH_IMAGES, LoadedModel, ModelStore


class SlowModel:
    """Answers 'probabilities' that encode each image's mean pixel, slowly, and records its batch sizes."""

    def __init__(self, seconds: float = 0.02, fail: bool = False):
        self.seconds, self.fail, self.batch_sizes = seconds, fail, []

    def predict_on_batch(self, batch: np.ndarray) -> np.ndarray:
        self.batch_sizes.append(len(batch))
        time.sleep(self.seconds)
        if self.fail:
            raise RuntimeError("model exploded")
        return np.repeat(batch.mean(axis=(1, 2, 3))[:, np.newaxis], 10, axis=1)


def images(value: float, count: int = 1) -> np.ndarray:
    return np.full((count, 28, 28, 1), value, dtype=np.float32)


def test_concurrent_requests_share_model_calls_and_each_gets_its_own_answer():
    # Prepare: 24 requests of 1-3 images each, arriving together
    model = SlowModel()
    loaded = LoadedModel(version=1, info={}, model=model)
    answers: dict[int, np.ndarray] = {}
    requests = {number: images(number / 100, count=1 + number % 3) for number in range(24)}

    def ask(number: int) -> None:
        answers[number] = loaded.predict(requests[number])

    # Execute
    threads = [threading.Thread(target=ask, args=(number,)) for number in requests]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    # Assert: fewer model calls than requests, every image classified once, every answer its own
    assert len(model.batch_sizes) < len(requests)
    assert sum(model.batch_sizes) == sum(len(batch) for batch in requests.values())
    for number, answer in answers.items():
        np.testing.assert_allclose(answer, np.full((len(requests[number]), 10), number / 100), rtol=1e-6)


def test_a_lone_request_goes_straight_through():
    model = SlowModel(seconds=0)
    loaded = LoadedModel(version=1, info={}, model=model)

    answer = loaded.predict(images(0.5, count=3))

    assert model.batch_sizes == [3]
    assert answer.shape == (3, 10)


def test_a_model_call_never_takes_more_than_the_batch_limit_unless_one_request_is_bigger():
    model = SlowModel(seconds=0.05)
    loaded = LoadedModel(version=1, info={}, model=model)
    big = MAX_BATCH_IMAGES // 2 + 1
    threads = [threading.Thread(target=loaded.predict, args=(images(0.1, big),)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert model.batch_sizes == [big] * 4
    assert loaded.predict(images(0.1, MAX_BATCH_IMAGES + 5)).shape == (MAX_BATCH_IMAGES + 5, 10)


def test_a_failing_model_call_fails_every_request_in_it_and_none_hangs():
    loaded = LoadedModel(version=1, info={}, model=SlowModel(fail=True))
    errors = []

    def ask():
        try:
            loaded.predict(images(0.3))
        except RuntimeError as error:
            errors.append(str(error))

    threads = [threading.Thread(target=ask) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert errors == ["model exploded"] * 6


def test_an_empty_models_dir_is_reported_not_raised(tmp_path):
    store = ModelStore(tmp_path / "nothing-here", reload_interval=0.05)
    try:
        assert store.wait_for_model(timeout=10) is None
        assert store.status().startswith("no model published yet")
    finally:
        store.stop()


@pytest.mark.parametrize("names", [["1", "2", "10"], ["3", "tmp", ".4.staging"]])
def test_only_the_newest_complete_version_is_picked(tmp_path, names, monkeypatch):
    for name in names:
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.h5").write_bytes(b"")
        (tmp_path / name / "info.json").write_text("{}")
    (tmp_path / "99").mkdir()  # incomplete: no model.h5 or info.json
    loaded_dirs = []
    monkeypatch.setattr("server.model_store.load_version",
                        lambda directory, *threads: loaded_dirs.append(directory.name) or LoadedModel(int(directory.name), {}, None))
    store = ModelStore(tmp_path)

    store.check_now()
    store.check_now()  # nothing newer: no second load

    assert loaded_dirs == [max((n for n in names if n.isdigit()), key=int)]
