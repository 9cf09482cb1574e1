"""Every server strategy's test accuracy per round, on the IID and a label-skewed split, in one table.

    .venv/bin/python -m bench.strategies [--rounds 5] [--alpha 0.3] [--strategies fedavg fedavgm ...] [-- runner flags]
    .venv/bin/python -m bench.strategies --variants "--strategy fedavgm --server-momentum 0.5" "--learning-rate 0.002"

Each configuration is a whole `python -m runner` run on a fresh volume (3 workers, our convnet, seed 0 unless
the extra runner flags say otherwise); the accuracies are the runs' own metrics.json, so the table is exactly
what a user gets from the same command. Runs are deterministic for a seed: one run per cell.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from common.atomic import read_json
from common.layout import RunLayout, data_path
from common.runconfig import SERVER_STRATEGIES

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "bench"


def accuracy_per_round(data: Path, rounds: int, flags: list[str]) -> list[float]:
    """Run the local pipeline once; the test accuracy after each round."""
    with tempfile.TemporaryDirectory() as volume:
        command = [sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), "--run-id", RUN_ID,
                   "--rounds", str(rounds), "--min-accuracy", "0", *flags]
        subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
        layout = RunLayout(Path(volume), RUN_ID)
        return [read_json(layout.metrics_path(number))["accuracy"] for number in range(1, rounds + 1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alpha", type=float, default=0.3, help="Dirichlet concentration of the skewed split")
    parser.add_argument("--strategies", nargs="+", choices=SERVER_STRATEGIES, default=list(SERVER_STRATEGIES))
    parser.add_argument("--variants", nargs="+", help="runner flags, one quoted string per row (instead of --strategies)")
    parser.add_argument("--splits", nargs="+", choices=["iid", "dirichlet"], default=["iid", "dirichlet"])
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    parser.add_argument("runner_args", nargs="*", help="extra flags for every run (after --)")
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.strategies: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    splits = {"iid": ("IID", ["--split", "iid"]),
              "dirichlet": (f"Dirichlet α = {args.alpha:g}", ["--split", "dirichlet", "--alpha", str(args.alpha)])}
    variants = ([variant.split() for variant in args.variants] if args.variants
                else [["--strategy", strategy] for strategy in args.strategies])
    rows = []
    for split_name, split_flags in (splits[split] for split in args.splits):
        for variant in variants:
            accuracies = accuracy_per_round(args.data, args.rounds, [*split_flags, *variant, *args.runner_args])
            label = variant[1] if len(variant) == 2 and variant[0] == "--strategy" else " ".join(variant)
            rows.append((split_name, label, accuracies))
            print(f"{split_name}, {label}: " + ", ".join(f"{100 * value:.2f}" for value in accuracies), flush=True)
    print(f"\n| split | strategy | test accuracy after rounds 1..{args.rounds} (%) | final |")
    print("|---|---|---|---:|")
    for split_name, strategy, accuracies in rows:
        print(f"| {split_name} | {strategy} | {', '.join(f'{100 * value:.2f}' for value in accuracies)} | "
              f"{100 * accuracies[-1]:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
