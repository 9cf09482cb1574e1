"""Train a small model in seconds and publish it like the pipeline does (model.h5, model.tflite, info.json): for
tests, benchmarks and trying the demo without running the federated pipeline first. The pipeline's publisher remains
the real way to publish. Needs TensorFlow (requirements.txt), unlike the server itself."""

from __future__ import annotations

import tempfile
from pathlib import Path

from common.cli import ArgumentParser, user_errors
from common.data import load_mnist, to_model_input
from common.runconfig import RunConfig


def train_and_publish(models_dir: Path, data_path: Path, version: int, num_images: int = 15_000, seed: int = 0) -> Path:
    """Train ``build_model(seed)`` for one epoch on the first ``num_images`` training images (~97% accurate) and
    publish it as ``models_dir/<version>`` with the pipeline's publisher; returns that directory."""
    try:
        from common.model import build_model  # imports TensorFlow
    except ImportError as error:  # the slim server image has no TensorFlow
        raise ValueError(f"training needs TensorFlow (pip install -r requirements.txt): {error}") from None
    from evaluator.metrics import classification_metrics
    from publisher.publish import publish_model_file

    mnist = load_mnist(data_path)
    model = build_model(seed=seed)
    history = model.fit(
        to_model_input(mnist.x_train[:num_images]), mnist.y_train[:num_images], epochs=1, batch_size=64, verbose=0
    )
    metrics = classification_metrics(model.predict(to_model_input(mnist.x_test), batch_size=1000, verbose=0), mnist.y_test)
    config = RunConfig(workers=1, rounds=1, seed=seed).to_dict()
    info = {
        "run_id": "quick-model",
        "round": 1,
        "config": config,
        "num_examples": num_images,
        "shard_sizes": [num_images],
        **{key: metrics[key] for key in ("accuracy", "loss", "per_class_accuracy", "confusion_matrix")},
        "history": [{"round": 1, "accuracy": metrics["accuracy"], "loss": float(history.history["loss"][-1])}],
    }
    with tempfile.TemporaryDirectory() as scratch:
        model_path = Path(scratch) / "model.h5"
        model.save(model_path)
        number = publish_model_file(Path(models_dir), model_path, info, version=version)
    return Path(models_dir) / str(number)


@user_errors("server.quick_model")
def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(prog="python -m server.quick_model", description=__doc__)
    parser.add_argument("--models-dir", type=Path, default=Path("volume/models/mnist"))
    parser.add_argument("--data", type=Path, default=Path("volume/data/mnist.npz"))
    parser.add_argument("--version", type=int, required=True)
    parser.add_argument("--num-images", type=int, default=15_000)
    args = parser.parse_args(argv)
    print(train_and_publish(args.models_dir, args.data, args.version, args.num_images))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
