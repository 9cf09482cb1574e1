"""The baseline for bench.local_vs_central: the same model trained centrally on all 60k in one process.

    .venv/bin/python -m bench.central --data volume/data/mnist.npz --epochs 4 --batch-size 64
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--batch-size", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs-per-round", type=int, default=1, help="epochs at each round's learning rate")
    args = parser.parse_args(argv)
    started = time.monotonic()
    import keras

    from common.data import load_mnist, to_model_input
    from common.model import build_model, learning_rate_for_round
    from evaluator.metrics import classification_metrics

    mnist = load_mnist(args.data)
    model = build_model(seed=args.seed)
    keras.utils.set_random_seed(args.seed)
    # The federated schedule: the learning rate of round k for that round's epochs.
    schedule = keras.callbacks.LearningRateScheduler(
        lambda epoch: learning_rate_for_round(epoch // args.epochs_per_round + 1)
    )
    model.fit(to_model_input(mnist.x_train), mnist.y_train, batch_size=args.batch_size, epochs=args.epochs,
              verbose=0, callbacks=[schedule])
    probabilities = model.predict(to_model_input(mnist.x_test), batch_size=1000, verbose=0)
    metrics = classification_metrics(probabilities, mnist.y_test)
    print(json.dumps({"accuracy": metrics["accuracy"], "seconds": time.monotonic() - started}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
