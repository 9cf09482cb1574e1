"""What a trainer pays once when it starts (Python, TensorFlow, the device, the first client) against a client later.

    .venv/bin/python -m bench.trainer_startup [--workers 3] [--repeats 2] [--output FILE]

In a temporary volume, `trainer.init` makes a run (one round, --workers IID shards of the real MNIST: 20,000 images
each at 3, the default run's clients). A fresh Python process, as a trainer pod starts, then times: its
interpreter (from the parent's spawn to its first line), importing Keras and TensorFlow, starting the backend
(`common.backend.start_backend`: on a GPU, CUDA and cuDNN; the trainer's first operation), the first client
(building and compiling the model, tracing the training step, one local epoch, the client file), and then every
worker's client --repeats times again with the same ClientTrainer, as a long-lived trainer (`trainer.serve`)
trains every round. Before issue 25 a pod per client per round paid the whole start each time; now a trainer
pays it once per run. Prints one JSON object (also written to --output). On a GPU machine run it with the GPU
image's environment; the devices it saw are in the output.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common.layout import RunLayout, data_path

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "trainer-startup"


def child(volume: Path, workers: int, repeats: int) -> dict:
    """In the fresh process: wall-clock stamps (time.time(), comparable with the parent's) of each phase."""
    stamps = {"main": time.time()}
    import keras  # noqa: F401  (Keras and TensorFlow, as a trainer imports them)

    stamps["imported"] = time.time()
    from common.backend import device_names, start_backend

    start_backend()
    stamps["backend"] = time.time()
    from common.runconfig import load_config
    from trainer.train import ClientTrainer

    layout = RunLayout(volume, RUN_ID)
    trainer = ClientTrainer()
    config = load_config(layout.config_path)
    trainer.train(layout, 1, 0, config.epochs, config.batch_size, config.seed)
    stamps["first_client"] = time.time()
    later = []
    for _ in range(repeats):
        for worker in range(workers):
            started = time.time()
            trainer.train(layout, 1, worker, config.epochs, config.batch_size, config.seed)
            later.append(time.time() - started)
    return {"stamps": stamps, "later_clients": later, "devices": device_names()}


def summarize(spawned: float, measured: dict) -> dict:
    """Seconds of each start-up phase and of a later client, and what a pod per client paid for one."""
    stamps = measured["stamps"]
    phases = {
        "interpreter": stamps["main"] - spawned,
        "import_keras_tensorflow": stamps["imported"] - stamps["main"],
        "start_backend": stamps["backend"] - stamps["imported"],
        "first_client": stamps["first_client"] - stamps["backend"],
    }
    later = statistics.median(measured["later_clients"])
    start_once = sum(phases.values()) - later  # what the first client cost beyond a later one's work
    return {
        "devices": measured["devices"],
        "seconds": {name: round(value, 3) for name, value in phases.items()},
        "later_client_median": round(later, 3),
        "later_clients": [round(value, 3) for value in measured["later_clients"]],
        "start_up_beyond_the_work": round(start_once, 3),
        "client_in_a_fresh_process_over_a_later_one": round(sum(phases.values()) / later, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=3, help="shards, one client each (3: the default run)")
    parser.add_argument("--repeats", type=int, default=2, help="times every client is trained again afterwards")
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    parser.add_argument("--output", type=Path, help="also write the JSON here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)  # the fresh process's own entry
    args = parser.parse_args(argv)
    if args.workers < 1 or args.repeats < 1:
        parser.error("--workers and --repeats must be at least 1")
    if args.child is not None:
        print(json.dumps(child(args.child, args.workers, args.repeats)))
        return 0
    if not args.data.is_file():
        print(f"bench.trainer_startup: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as volume:
        init = [sys.executable, "-m", "trainer.init", "--volume", volume, "--run-id", RUN_ID, "--data", str(args.data),
                "--workers", str(args.workers), "--rounds", "1"]
        subprocess.run(init, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        command = [sys.executable, "-m", "bench.trainer_startup", "--child", volume, "--workers", str(args.workers),
                   "--repeats", str(args.repeats)]
        spawned = time.time()
        output = subprocess.run(command, cwd=REPO_ROOT, check=True, capture_output=True, text=True).stdout
    result = summarize(spawned, json.loads(output.strip().splitlines()[-1]))
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
