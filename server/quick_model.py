"""Train a small model in seconds and publish it like the pipeline does (model.h5, model.tflite, info.json): for
tests, benchmarks and trying the demo without running the federated pipeline first. The pipeline's publisher remains
the real way to publish. Needs TensorFlow (requirements.txt), unlike the server itself."""

from __future__ import annotations

import argparse
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from common.atomic import write_json
from common.cli import user_errors
from common.data import load_mnist, to_model_input
from common.layout import published_info_path, published_litert_path, published_model_path


def train_and_publish(models_dir: Path, data_path: Path, version: int, num_images: int = 15_000, seed: int = 0) -> Path:
    """Train ``build_model(seed)`` for one epoch on the first ``num_images`` training images (~97% accurate) and
    publish it as ``models_dir/<version>``; returns that directory."""
    try:
        from common.model import build_model  # imports TensorFlow
    except ImportError as error:  # the slim server image has no TensorFlow
        raise ValueError(f"training needs TensorFlow (pip install -r requirements.txt): {error}") from None
    from publisher.litert import write_litert

    mnist = load_mnist(data_path)
    model = build_model(seed=seed)
    history = model.fit(
        to_model_input(mnist.x_train[:num_images]), mnist.y_train[:num_images], epochs=1, batch_size=64, verbose=0
    )
    probabilities = model.predict(to_model_input(mnist.x_test), batch_size=1000, verbose=0)
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((10, 10), dtype=int)
    np.add.at(confusion, (mnist.y_test, predicted), 1)
    accuracy = float((predicted == mnist.y_test).mean())
    loss = float(-np.log(probabilities[np.arange(len(predicted)), mnist.y_test] + 1e-7).mean())
    info = {
        "version": version,
        "run_id": "quick-model",
        "published_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "round": 1,
        "config": {"workers": 1, "rounds": 1, "epochs": 1, "batch_size": 64, "split": "iid", "alpha": 0.5,
                   "seed": seed, "start_model": None},
        "num_examples": num_images,
        "shard_sizes": [num_images],
        "accuracy": round(accuracy, 4),
        "loss": round(loss, 4),
        "per_class_accuracy": [round(float(confusion[d, d] / confusion[d].sum()), 4) for d in range(10)],
        "confusion_matrix": confusion.tolist(),
        "history": [{"round": 1, "accuracy": round(accuracy, 4), "loss": round(float(history.history["loss"][-1]), 4)}],
    }
    # Build the version beside its final name, then rename: the server never sees a half-written version.
    final_dir = Path(models_dir) / str(version)
    staging_dir = Path(models_dir) / f".{version}.staging"
    staging_dir.mkdir(parents=True, exist_ok=False)
    model.save(published_model_path(staging_dir))
    write_litert(published_model_path(staging_dir), published_litert_path(staging_dir))
    write_json(published_info_path(staging_dir), info)
    staging_dir.rename(final_dir)
    return final_dir


@user_errors("server.quick_model")
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m server.quick_model", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("volume/models/mnist"))
    parser.add_argument("--data", type=Path, default=Path("volume/data/mnist.npz"))
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--num-images", type=int, default=15_000)
    args = parser.parse_args(argv)
    print(train_and_publish(args.models_dir, args.data, args.version, args.num_images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
