"""The one place that knows where every file lives on the shared volume (a local directory or NFS).

    <volume>/
      data/mnist.npz                          MNIST in Keras's npz layout (uint8)
      runs/<run-id>/
        run.json                              the run's configuration (a resume must match it)
        shards/manifest.json                  per-shard counts and label histograms
        shards/shard-000.npz ...              one training shard per worker
        rounds/round-000/global.h5            the shared initial model
        rounds/round-001/clients.json         the workers sampled to train this round (when sampling)
        rounds/round-001/client-000.h5 ...    each worker's model after local training
        rounds/round-001/server-state.h5      the server optimizer's state after this round (fedavgm/fedadagrad/fedadam/fedyogi)
        rounds/round-001/attempts-003.json    how often a trainer started this client (a process that dies is blamed)
        rounds/round-001/failed-003.json      why a client did not finish (after its trainer's retries)
        rounds/round-001/aggregate.json       which clients the global model combines, who was missing, and DP
        rounds/round-001/global.h5            their aggregate: the next round's starting model
        rounds/round-001/metrics.json         its accuracy on the 10k test set
        stopped.json                          why the run was given up (trainers waiting for a round exit on it)
        logs/round-001/worker-000/            TensorBoard logs
      models/mnist/<version>/model.h5         published models (versions 1, 2, ...), newest served
      models/mnist/<version>/model.tflite     the same model converted to LiteRT at publish time (what the server runs)
      models/mnist/<version>/info.json        how the model was made and its accuracy
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

RUN_ID_PATTERN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$")
MODEL_NAME = "mnist"


def check_run_id(run_id: str) -> str:
    """Return ``run_id`` if it is safe as one directory name (and as an Argo workflow name), else raise."""
    if not RUN_ID_PATTERN.match(run_id):
        raise ValueError(
            f"run id {run_id!r} must be 1-63 lowercase letters, digits, '-' or '.', "
            "starting and ending with a letter or digit"
        )
    return run_id


def data_path(volume: Path) -> Path:
    """Where MNIST lives on the volume."""
    return Path(volume) / "data" / "mnist.npz"


def models_dir(volume: Path) -> Path:
    """The directory of published model versions that the web demo serves from."""
    return Path(volume) / "models" / MODEL_NAME


def model_version_dir(volume: Path, version: int) -> Path:
    """The directory of one published model version."""
    return models_dir(volume) / str(version)


def published_model_path(version_dir: Path) -> Path:
    """The model file inside a published version directory."""
    return Path(version_dir) / "model.h5"


def published_litert_path(version_dir: Path) -> Path:
    """The LiteRT (TensorFlow Lite) conversion of the model, which the web demo serves."""
    return Path(version_dir) / "model.tflite"


def published_info_path(version_dir: Path) -> Path:
    """The description (config, accuracy per round) inside a published version directory."""
    return Path(version_dir) / "info.json"


def published_versions(models_directory: Path) -> list[int]:
    """Complete published versions (model and info present) in ``models/mnist``, oldest first."""
    models_directory = Path(models_directory)
    if not models_directory.is_dir():
        return []
    versions = []
    for entry in models_directory.iterdir():
        if entry.name.isdigit() and published_model_path(entry).is_file() and published_info_path(entry).is_file():
            versions.append(int(entry.name))
    return sorted(versions)


def newest_version_dir(models_directory: Path) -> Path | None:
    """The newest complete published version's directory, or None before anything is published."""
    versions = published_versions(models_directory)
    return Path(models_directory) / str(versions[-1]) if versions else None


@dataclass(frozen=True)
class RunLayout:
    """Paths of one run on the volume; every component computes its paths here."""

    volume: Path
    run_id: str

    def __post_init__(self) -> None:
        object.__setattr__(self, "volume", Path(self.volume))
        check_run_id(self.run_id)

    @property
    def run_dir(self) -> Path:
        return self.volume / "runs" / self.run_id

    @property
    def config_path(self) -> Path:
        return self.run_dir / "run.json"

    @property
    def shards_dir(self) -> Path:
        return self.run_dir / "shards"

    @property
    def manifest_path(self) -> Path:
        return self.shards_dir / "manifest.json"

    def shard_path(self, worker: int) -> Path:
        return self.shards_dir / f"shard-{worker:03d}.npz"

    def round_dir(self, round_number: int) -> Path:
        return self.run_dir / "rounds" / f"round-{round_number:03d}"

    def global_model_path(self, round_number: int) -> Path:
        """The model at the end of ``round_number``; round 0's is the shared initial model."""
        return self.round_dir(round_number) / "global.h5"

    def client_model_path(self, round_number: int, worker: int) -> Path:
        return self.round_dir(round_number) / f"client-{worker:03d}.h5"

    def sampled_clients_path(self, round_number: int) -> Path:
        """The JSON list of workers sampled to train in ``round_number`` (absent: every worker trains)."""
        return self.round_dir(round_number) / "clients.json"

    def server_state_path(self, round_number: int) -> Path:
        """The server optimizer's state (momentum, moments) after ``round_number``, beside its global model."""
        return self.round_dir(round_number) / "server-state.h5"

    def client_failure_path(self, round_number: int, worker: int) -> Path:
        """Why a sampled client did not finish ``round_number`` (written once its retries are spent)."""
        return self.round_dir(round_number) / f"failed-{worker:03d}.json"

    def client_attempts_path(self, round_number: int, worker: int) -> Path:
        """How many times a trainer started ``worker`` in ``round_number`` (counted before each start)."""
        return self.round_dir(round_number) / f"attempts-{worker:03d}.json"

    @property
    def stop_path(self) -> Path:
        """Written when the run is given up (a bad setting, a round that cannot go on): waiting trainers exit."""
        return self.run_dir / "stopped.json"

    def round_record_path(self, round_number: int) -> Path:
        """What the aggregator did in ``round_number``: clients combined and missing, Krum's choice, DP's noise."""
        return self.round_dir(round_number) / "aggregate.json"

    def metrics_path(self, round_number: int) -> Path:
        return self.round_dir(round_number) / "metrics.json"

    @property
    def summary_path(self) -> Path:
        """What became of the run (status, accuracy per round, published version): written when it ends."""
        return self.run_dir / "summary.json"

    def tensorboard_dir(self, round_number: int, worker: int) -> Path:
        return self.run_dir / "logs" / f"round-{round_number:03d}" / f"worker-{worker:03d}"
