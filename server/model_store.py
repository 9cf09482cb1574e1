"""The served model: loaded in a background thread, swapped for a newer published version without a restart.

Requests never touch the file system: a watcher thread looks at the models directory once per ``reload_interval``,
loads a newer version completely (and runs it once) before swapping one reference. A request takes that reference
once, so it is answered by one whole model, old or new, never a mixture. The server runs the ``model.tflite`` that
the publisher wrote with the LiteRT interpreter (common/litert.py): no TensorFlow in the server. For one image that
is 0.23 ms instead of 0.84 ms with Keras's ``predict_on_batch``, and the interpreter releases the GIL while it
computes, so a worker's other threads parse and preprocess meanwhile.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from common.atomic import read_json
from common.data import to_model_input
from common.layout import models_dir, newest_version_dir, published_info_path, published_litert_path
from common.litert import LiteRtModel

logger = logging.getLogger(__name__)


MAX_BATCH_IMAGES = 256  # one model call takes at most this many images (~60 ms): bounds everyone's wait


class _Pending:
    """One request's images waiting for a model call, and then its answer."""

    __slots__ = ("images", "probabilities", "error", "done")

    def __init__(self, images: np.ndarray):
        self.images = images
        self.probabilities: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class LoadedModel:
    """One published version in memory: its number, its info.json and its model (anything with ``predict_on_batch``).

    ``predict`` batches concurrent requests: while one model call runs, the requests that arrive queue up, and the
    next caller to get the model runs all of them in one call, which saves the per-call overhead. Nobody waits for
    a timer, so a lone request goes straight through. One call at a time is also what the interpreter needs: it is
    not thread-safe.
    """

    def __init__(self, version: int, info: dict, model: Any):
        self.version = version
        self.info = info
        self.model = model
        self._model_lock = threading.Lock()  # held while the model runs
        self._queue_lock = threading.Lock()  # guards _queue
        self._queue: list[_Pending] = []

    def predict(self, batch: np.ndarray) -> np.ndarray:
        """Model input float32 (n, 28, 28, 1) in [0, 1] -> probabilities (n, 10)."""
        pending = _Pending(batch)
        with self._queue_lock:
            self._queue.append(pending)
        while not pending.done:
            with self._model_lock:
                if not pending.done:  # no earlier caller took it along: run it, and whatever else is waiting
                    self._run_queued()
        if pending.error is not None:
            raise pending.error
        return pending.probabilities

    def _run_queued(self) -> None:
        """Run the waiting requests (up to MAX_BATCH_IMAGES images) in one model call; called with the model lock."""
        with self._queue_lock:
            taken, count = [], 0
            while self._queue and (not taken or count + len(self._queue[0].images) <= MAX_BATCH_IMAGES):
                taken.append(self._queue.pop(0))
                count += len(taken[-1].images)
        try:
            batch = taken[0].images if len(taken) == 1 else np.concatenate([p.images for p in taken])
            probabilities = np.asarray(self.model.predict_on_batch(batch), dtype=np.float32)
        except Exception as error:  # every request of this batch gets the error (and a 500), none hangs
            for pending in taken:
                pending.error, pending.done = error, True
            return
        start = 0
        for pending in taken:
            pending.probabilities = probabilities[start : start + len(pending.images)]
            pending.done = True
            start += len(pending.images)


def load_version(version_dir: Path, inference_threads: int = 1) -> LoadedModel:
    """Load one published version's ``model.tflite`` and run it once, so it answers its first request at full speed."""
    info = read_json(published_info_path(version_dir))
    if not isinstance(info, dict):
        raise ValueError(f"{published_info_path(version_dir)}: expected a JSON object")
    litert_path = published_litert_path(version_dir)
    if not litert_path.is_file():
        raise ValueError(f"it has no model.tflite (published before the publisher converted models); add it with "
                         f"`python -m publisher.litert --volume {volume_of(version_dir)}`")
    model = LiteRtModel.from_file(litert_path, threads=inference_threads)
    loaded = LoadedModel(version=int(version_dir.name), info=info, model=model)
    loaded.predict(to_model_input(np.zeros((1, 28, 28), dtype=np.uint8)))
    return loaded


class ModelStore:
    """Holds the newest published model of ``models_dir`` and follows new versions from a background thread."""

    def __init__(
        self,
        models_dir: Path,
        reload_interval: float = 1.0,
        inference_threads: int = 1,
        on_load: Callable[[int, str], None] | None = None,
    ):
        """``on_load(version, "ok" | "error")`` is called after each attempt to load a version (for metrics)."""
        self.models_dir = Path(models_dir)
        self.on_load = on_load
        self.reload_interval = reload_interval
        self.inference_threads = inference_threads
        self._current: LoadedModel | None = None
        self._scanned = False  # the watcher has looked at least once (so "no model" is an answer, not a guess)
        self._failed: dict[Path, float] = {}  # version dirs that failed to load -> their mtime then
        self.last_error: str | None = None
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start the watcher thread (once; later calls return at once)."""
        if self._thread is not None:
            return
        with self._changed:
            if self._thread is None:
                self._stop.clear()
                self._thread = threading.Thread(target=self._watch, name="model-watcher", daemon=True)
                self._thread.start()

    def stop(self) -> None:
        """Stop the watcher (tests; the process exiting also ends the daemon thread)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._thread = None

    @property
    def current(self) -> LoadedModel | None:
        """The model to answer with right now, or None before any is loaded."""
        return self._current

    def wait_for_model(self, timeout: float) -> LoadedModel | None:
        """The current model; if a first one is still loading, wait for it up to ``timeout`` seconds."""
        self.start()
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._current is None and (not self._scanned or self._loading_first()):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._changed.wait(remaining)
            return self._current

    def _loading_first(self) -> bool:
        """True while the first published version is being loaded (worth waiting for)."""
        return self._current is None and self.last_error is None and self._newest_loadable() is not None

    def status(self) -> str:
        """One line for /readyz and error messages."""
        current = self._current
        if current is not None:
            return f"serving version {current.version}"
        if not self._scanned or self._loading_first():
            return "loading the model"
        if self.last_error:
            return f"no model loaded: {self.last_error}"
        return f"no model published yet in {self.models_dir}"

    def check_now(self) -> None:
        """Load the newest version if it is newer than the one served (the watcher calls this every interval)."""
        newest = self._newest_loadable()
        current = self._current
        if newest is not None and (current is None or int(newest.name) > current.version):
            try:
                loaded = load_version(newest, self.inference_threads)
            except Exception as error:  # a corrupt or unreadable version must not take the server down
                self._failed[newest] = _mtime(newest)
                self.last_error = f"version {newest.name} could not be loaded: {error}"
                self._report(int(newest.name), "error")
                logger.error("model version %s could not be loaded: %s", newest.name, error)
            else:
                self._current = loaded  # one reference assignment: requests see the old or the new model
                self.last_error = None
                self._report(loaded.version, "ok")
                logger.info("serving model version %d from %s", loaded.version, newest)
        with self._changed:
            self._scanned = True
            self._changed.notify_all()

    def _report(self, version: int, outcome: str) -> None:
        if self.on_load is not None:
            self.on_load(version, outcome)

    def _newest_loadable(self) -> Path | None:
        """The newest complete version, unless it already failed to load and has not changed since."""
        newest = newest_version_dir(self.models_dir)
        if newest is not None and newest in self._failed and self._failed[newest] == _mtime(newest):
            return None
        return newest

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                self.check_now()
            except Exception:  # e.g. the volume is briefly unavailable: log it and look again next interval
                logger.exception("checking %s for a new model failed", self.models_dir)
            self._stop.wait(self.reload_interval)


def volume_of(version_dir: Path) -> str:
    """The volume that holds ``<volume>/models/mnist/<version>`` (for the conversion command in messages)."""
    version_dir = Path(version_dir).absolute()
    return str(version_dir.parents[2]) if models_dir(version_dir.parents[2]) == version_dir.parent else "VOLUME"


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0
