"""Wall time of the default local federated run ÷ wall time of training the same model centrally.

    .venv/bin/python -m bench.local_vs_central [--pairs 2] [-- extra runner flags]

Both sides are whole processes started from scratch (Python, TensorFlow, data loading, training,
a final test-set evaluation). The central side trains on all 60k for rounds x epochs epochs, the
federated total. Runs are interleaved A/B pairs in one session; medians and their ratio are printed.
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

from common.atomic import read_json
from common.layout import data_path, models_dir, newest_version_dir, published_info_path
from common.runconfig import RunConfig

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_federated(data: Path, extra: list[str]) -> tuple[float, float]:
    with tempfile.TemporaryDirectory() as volume:
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), *extra],
                       cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        seconds = time.perf_counter() - started
        info = read_json(published_info_path(newest_version_dir(models_dir(Path(volume)))))
    return seconds, info["accuracy"]


def run_central(data: Path, epochs: int, batch_size: int) -> tuple[float, float]:
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "bench.central", "--data", str(data), "--epochs", str(epochs),
                             "--batch-size", str(batch_size)], cwd=REPO_ROOT, check=True, capture_output=True, text=True)
    seconds = time.perf_counter() - started
    return seconds, json.loads(result.stdout.strip().splitlines()[-1])["accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=2, help="interleaved federated/central pairs")
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    parser.add_argument("runner_args", nargs="*", help="extra flags for the runner (after --)")
    args = parser.parse_args(argv)
    defaults = RunConfig()
    total_epochs = defaults.rounds * defaults.epochs
    federated, central = [], []
    for pair in range(args.pairs):
        federated.append(run_federated(args.data, args.runner_args))
        central.append(run_central(args.data, total_epochs, defaults.batch_size))
        print(f"pair {pair + 1}: federated {federated[-1][0]:.1f} s ({federated[-1][1]:.4f}), "
              f"central {central[-1][0]:.1f} s ({central[-1][1]:.4f})", flush=True)
    federated_seconds = statistics.median(seconds for seconds, _ in federated)
    central_seconds = statistics.median(seconds for seconds, _ in central)
    print(f"default local run ({defaults.workers} workers x {defaults.rounds} rounds x {defaults.epochs} epoch): "
          f"median {federated_seconds:.1f} s, accuracy {statistics.median(a for _, a in federated):.4f}")
    print(f"central, same model, {total_epochs} epochs on 60k in one process: "
          f"median {central_seconds:.1f} s, accuracy {statistics.median(a for _, a in central):.4f}")
    print(f"ratio federated / central: {federated_seconds / central_seconds:.2f} (target <= 1.3)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
