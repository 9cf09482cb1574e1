"""How the coordinator and the long-lived trainers meet on the shared volume: by files alone, no queue, no lock.

A round starts when the coordinator publishes its ``clients.json`` (the previous round's ``global.h5`` is
already there); the i-th client of that list belongs to trainer ``i % trainers``, so every trainer knows its
share without asking anyone. A client is done when its ``client-NNN.h5`` was trained from this round's
starting model, or failed when its ``failed-NNN.json`` exists; the round is aggregated once every client is one
or the other, or at its deadline. Every file is published atomically (a temporary name, then a rename), and
readers open files rather than trust a cached ``stat``: on NFS, close-to-open consistency then gives them the
whole new file (docs/kubernetes.md says which mount options make new names visible at once).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from common.atomic import read_json, write_json
from common.layout import RunLayout
from common.modelfile import read_file_metadata
from common.runconfig import RunConfig, load_config

# How often a waiting process looks again: a round's start or end is seen within this, at the cost of a few
# directory look-ups a second on the volume.
POLL_SECONDS = 0.25
# How many times one client of a round is started before it counts as failed (partial rounds only): a process
# that dies while training it is retried once, then the client is left out and the round goes on without it.
CLIENT_ATTEMPTS = 2
TRAINER_PROCESS_DIED = "its trainer process died (killed, or out of memory)"

Value = TypeVar("Value")


class RunStopped(ValueError):
    """The run was given up (``stopped.json``): whoever waits for it has nothing left to do."""


def trainer_share(clients: list[int], trainer: int, trainers: int) -> list[int]:
    """The clients of a round that trainer ``trainer`` of ``trainers`` trains: every trainers-th, from its own."""
    if not 0 <= trainer < trainers:
        raise ValueError(f"--trainer must be between 0 and {trainers - 1} (--trainers {trainers}), got {trainer}")
    return clients[trainer::trainers]


def client_is_done(layout: RunLayout, round_number: int, worker: int, start_sha256: str) -> bool:
    """True if this client's model exists, is readable, and was trained from this round's starting model."""
    path = layout.client_model_path(round_number, worker)
    if not path.is_file():
        return False
    try:
        metadata = read_file_metadata(path)
    except (ValueError, OSError):
        return False
    return (
        metadata.get("run_id") == layout.run_id
        and metadata.get("round") == round_number
        and metadata.get("global_sha256") == start_sha256
    )


def client_has_failed(layout: RunLayout, round_number: int, worker: int) -> bool:
    """True once a trainer gave this client up for the round (its retries spent)."""
    return layout.client_failure_path(round_number, worker).is_file()


def record_client_failure(layout: RunLayout, round_number: int, worker: int, reason: str) -> None:
    """Leave why a client did not finish, for the aggregator's record (atomic)."""
    write_json(layout.client_failure_path(round_number, worker), {"worker": worker, "round": round_number, "reason": reason})


def count_attempt(layout: RunLayout, round_number: int, worker: int) -> int:
    """Count one more start of this client and return the count (1 for the first start)."""
    path = layout.client_attempts_path(round_number, worker)
    try:
        attempts = int(read_json(path)["attempts"]) if path.is_file() else 0
    except (ValueError, KeyError, TypeError):
        attempts = 0  # a note from a process that died mid-write is not there: count afresh
    write_json(path, {"worker": worker, "round": round_number, "attempts": attempts + 1})
    return attempts + 1


def stop_run(layout: RunLayout, reason: str) -> None:
    """Tell every process waiting on the run that it was given up, and why."""
    write_json(layout.stop_path, {"reason": reason})


def stop_reason(layout: RunLayout) -> str | None:
    """Why the run was given up, or None while it goes on."""
    if not layout.stop_path.is_file():
        return None
    try:
        return str(read_json(layout.stop_path).get("reason", "stopped"))
    except (ValueError, AttributeError):
        return "stopped"


def wait_for(
    layout: RunLayout,
    ready: Callable[[], Value | None],
    what: str,
    timeout: float,
    poll: float = POLL_SECONDS,
) -> Value:
    """Poll ``ready()`` until it returns something other than None; raise RunStopped or TimeoutError meanwhile."""
    deadline = time.monotonic() + timeout
    while True:
        reason = stop_reason(layout)  # first: a run that was given up has nothing ready for anyone
        if reason is not None:
            raise RunStopped(reason)
        value = ready()
        if value is not None:
            return value
        if time.monotonic() >= deadline:
            raise TimeoutError(f"waited {timeout:.0f} s for {what}")
        time.sleep(poll)


def wait_for_run_start(layout: RunLayout, timeout: float, poll: float = POLL_SECONDS) -> RunConfig:
    """The run's configuration, once its init wrote it, the initial model and the shards (the manifest comes last)."""
    wait_for(layout, lambda: existing(layout.manifest_path), "the run's shards (the init step)", timeout, poll)
    wait_for(layout, lambda: existing(layout.global_model_path(0)), "the run's initial model", timeout, poll)
    return load_config(layout.config_path)


def existing(path: Path) -> Path | None:
    """``path`` if it is a file now, else None (a ``wait_for`` condition)."""
    return path if path.is_file() else None
