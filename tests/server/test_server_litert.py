"""The LiteRT model the publisher writes: it predicts what the Keras model predicts, it is part of every version the
publisher makes, and versions published without it get a clear status and a command, never a crash."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest

from common.data import to_model_input
from common.layout import RunLayout, models_dir, published_litert_path, published_model_path, published_versions
from common.litert import LiteRtModel

from conftest import REPO_ROOT, make_app


def test_litert_predicts_what_keras_predicts_on_the_10k_test_set(trained_versions, mnist_test_set):
    from common.model import load_model

    images, _ = mnist_test_set
    inputs = to_model_input(images)
    version_dir = trained_versions / "1"

    keras_probabilities = load_model(published_model_path(version_dir)).predict(inputs, batch_size=1000, verbose=0)
    litert_probabilities = LiteRtModel.from_file(published_litert_path(version_dir)).predict(inputs)

    assert litert_probabilities.shape == keras_probabilities.shape == (10_000, 10)
    assert np.abs(litert_probabilities - keras_probabilities).max() < 1e-4
    agreement = (litert_probabilities.argmax(axis=1) == keras_probabilities.argmax(axis=1)).mean()
    assert agreement >= 0.999


def fake_run(volume, trained_versions, run_id: str = "run-a") -> RunLayout:
    """A finished one-round run whose global model is a trained model (what the publisher reads)."""
    layout = RunLayout(volume, run_id)
    published_model_path(layout.round_dir(1)).parent.mkdir(parents=True)
    shutil.copyfile(published_model_path(trained_versions / "1"), layout.global_model_path(1))
    metrics = {"accuracy": 0.97, "loss": 0.1, "per_class_accuracy": [0.97] * 10,
               "confusion_matrix": np.eye(10, dtype=int).tolist()}
    layout.metrics_path(1).write_text(json.dumps(metrics))
    layout.manifest_path.parent.mkdir(parents=True)
    layout.manifest_path.write_text(json.dumps({"shards": [{"num_examples": 100}]}))
    return layout


def test_the_publisher_writes_model_tflite_into_the_version_before_it_appears(tmp_path, trained_versions):
    from publisher.publish import publish

    layout = fake_run(tmp_path, trained_versions)

    version, is_new = publish(layout, 1)

    version_dir = models_dir(tmp_path) / str(version)
    assert (version, is_new) == (1, True)
    assert sorted(path.name for path in version_dir.iterdir()) == ["info.json", "model.h5", "model.tflite"]
    assert [path.name for path in models_dir(tmp_path).iterdir()] == ["1"]  # no staging directory left behind


def test_a_failed_conversion_publishes_nothing(tmp_path, trained_versions, monkeypatch):
    import publisher.publish

    def failing_conversion(model_path, litert_path):
        raise ValueError("the LiteRT conversion differs from the Keras model")

    monkeypatch.setattr(publisher.publish, "write_litert", failing_conversion)
    layout = fake_run(tmp_path, trained_versions)

    with pytest.raises(ValueError, match="differs"):
        publisher.publish.publish(layout, 1)

    assert published_versions(models_dir(tmp_path)) == []
    assert list(models_dir(tmp_path).iterdir()) == []


def test_a_version_published_without_tflite_is_not_ready_until_converted(tmp_path, trained_versions):
    from publisher.litert import main as convert_main

    # Prepare: version 1 as the publisher wrote it before this change (model.h5 and info.json only)
    directory = models_dir(tmp_path)
    shutil.copytree(trained_versions / "1", directory / "1", ignore=shutil.ignore_patterns("*.tflite"))
    app = make_app(directory)
    client = app.test_client()
    try:
        deadline = time.monotonic() + 20
        while client.get("/readyz").json.get("reason", "").startswith("loading") and time.monotonic() < deadline:
            time.sleep(0.05)

        # Execute / Assert: not ready, with the command that fixes it
        response = client.get("/readyz")
        assert response.status_code == 503
        assert "no model.tflite" in response.json["reason"]
        assert f"python -m publisher.litert --volume {tmp_path}" in response.json["reason"]
        assert client.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]}).status_code == 503

        assert convert_main(["--volume", str(tmp_path)]) == 0
        deadline = time.monotonic() + 20
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, client.get("/readyz").json
            time.sleep(0.05)
        assert client.post("/v1/models/mnist:predict", json={"instances": [[0.0] * 784]}).status_code == 200
    finally:
        app.extensions["mnist_model_store"].stop()


def test_the_publisher_imports_nothing_from_the_server_package():
    # The LiteRT wrapper lives in common/ (the slim server image copies it too): publishing needs no web server.
    script = ("import sys, publisher.__main__, publisher.litert, publisher.publish; "
              "print(sorted({name.split('.')[0] for name in sys.modules} & {'server', 'flask'}))")

    finished = subprocess.run([sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True,
                              timeout=120)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stdout.strip() == "[]"
