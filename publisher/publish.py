"""Publishing: copy a run's model, its LiteRT conversion and its story (config, accuracy per round) into
models/mnist/<version>/."""

from __future__ import annotations

import datetime
import os
import shutil
import tempfile
from pathlib import Path

from common.atomic import read_json, write_json
from common.layout import (
    RunLayout,
    models_dir,
    published_info_path,
    published_litert_path,
    published_model_path,
    published_versions,
)
from common.runconfig import load_config
from common.history import round_history
from publisher.litert import write_litert


def find_published(volume: Path, run_id: str, round_number: int) -> int | None:
    """The version that already holds this run's round, if it was published before."""
    directory = models_dir(volume)
    for version in published_versions(directory):
        info = read_json(published_info_path(directory / str(version)))
        if info.get("run_id") == run_id and info.get("round") == round_number:
            return version
    return None


def build_info(layout: RunLayout, round_number: int) -> dict:
    """info.json for round ``round_number`` of a run: how it was made and how well it does."""
    history = round_history(layout, round_number)
    final_metrics = read_json(layout.metrics_path(round_number))
    manifest = read_json(layout.manifest_path)
    shard_sizes = [shard["num_examples"] for shard in manifest["shards"]]
    config = load_config(layout.config_path).to_dict() if layout.config_path.is_file() else None
    return {
        "run_id": layout.run_id,
        "round": round_number,
        "config": config,
        "num_examples": sum(shard_sizes),
        "shard_sizes": shard_sizes,
        "accuracy": final_metrics["accuracy"],
        "loss": final_metrics["loss"],
        "per_class_accuracy": final_metrics["per_class_accuracy"],
        "confusion_matrix": final_metrics["confusion_matrix"],
        "history": history,
        # User-level DP: the privacy spent by the published round (every round before it included).
        "privacy": history[-1].get("privacy") if history else None,
    }


def publish(layout: RunLayout, round_number: int, min_accuracy: float | None = None) -> tuple[int, bool]:
    """Publish round ``round_number``'s global model; returns (version, newly published). Idempotent per run."""
    model_path = layout.global_model_path(round_number)
    if not model_path.is_file():
        raise ValueError(f"{model_path}: no global model for round {round_number}")
    existing = find_published(layout.volume, layout.run_id, round_number)
    if existing is not None:
        return existing, False
    info = build_info(layout, round_number)
    if min_accuracy is not None and info["accuracy"] < min_accuracy:
        raise AccuracyTooLow(f"accuracy {info['accuracy']:.4f} is below --min-accuracy {min_accuracy}; not published")
    return publish_model_file(models_dir(layout.volume), model_path, info), True


def publish_model_file(directory: Path, model_path: Path, info: dict, version: int | None = None) -> int:
    """Publish a Keras h5 model and its ``info`` as a new version in ``directory``; returns its number.

    The next free number, or exactly ``version`` (an error if it exists). The version is built in a hidden
    directory and renamed into place: the web demo only ever sees complete versions (model.h5, its LiteRT
    conversion, info.json), and two publishers racing for one number cannot both win it.
    """
    directory.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".publishing-", dir=directory))
    try:
        shutil.copyfile(model_path, published_model_path(staging))
        # Converted here, once, so the server runs model.tflite without importing TensorFlow.
        write_litert(published_model_path(staging), published_litert_path(staging))
        while True:
            versions = published_versions(directory)
            number = version if version is not None else (max(versions) if versions else 0) + 1
            published = {**info, "version": number,
                         "published_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
            write_json(published_info_path(staging), published)
            try:
                os.rename(staging, directory / str(number))
                return number
            except OSError:
                if not (directory / str(number)).exists():
                    raise
                if version is not None:
                    raise ValueError(f"{directory / str(number)} is already published") from None
                # Another publisher took this number first: try the next.
    finally:
        shutil.rmtree(staging, ignore_errors=True)


class AccuracyTooLow(ValueError):
    """The model is not good enough to publish."""
