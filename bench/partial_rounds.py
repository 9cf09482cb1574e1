"""Partial rounds: a trainer killed in every round, the run going on with --min-clients, beside an undisturbed run.

    .venv/bin/python -m bench.partial_rounds [--workers 10] [--rounds 5] [--min-clients 8]

Both rows are whole `python -m runner` runs (IID, seed 0, --min-clients 8); in the first, one seeded worker of
every round has its trainer process killed (`kill -9`) each time it trains, the retry included (bench/faults.py),
so that round goes on with 9 clients. Accuracies are the runs' own metrics.json.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.faults import TrainerKiller
from common.atomic import read_json
from common.layout import RunLayout, data_path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(volume: Path, data: Path, run_id: str, flags: list[str], victims: dict[int, int]) -> tuple[float, list]:
    """One runner run, killing ``victims`` (round -> worker) meanwhile; its wall time and the kills made."""
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(data), "--run-id", run_id,
               "--min-accuracy", "0", *flags]
    started = time.monotonic()
    runner = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    with TrainerKiller(runner, RunLayout(volume, run_id), victims) as killer:
        _, stderr = runner.communicate()
    if runner.returncode != 0:
        raise RuntimeError(f"{run_id} failed: {stderr.strip()}")
    return time.monotonic() - started, killer.kills


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=10)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-clients", type=int, default=8)
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.partial_rounds: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    flags = ["--workers", str(args.workers), "--rounds", str(args.rounds), "--min-clients", str(args.min_clients)]
    rng = np.random.default_rng(0)
    victims = {round_number: int(rng.integers(args.workers)) for round_number in range(1, args.rounds + 1)}
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        for label, run_id, plan in (("one trainer killed per round", "killed", victims), ("undisturbed", "whole", {})):
            seconds, kills = run(Path(temporary), args.data, run_id, flags, plan)
            layout = RunLayout(Path(temporary), run_id)
            metrics = [read_json(layout.metrics_path(number)) for number in range(1, args.rounds + 1)]
            clients = [entry.get("clients") for entry in metrics]
            rows.append((label, [entry["accuracy"] for entry in metrics], clients, len(kills), seconds))
            print(f"{label}: clients per round {clients}, {len(kills)} kills, {seconds:.0f} s", flush=True)
    print(f"\nvictims (round: worker): {victims}")
    print("| run | clients per round | " + " | ".join(f"round {n}" for n in range(1, args.rounds + 1)) + " | kills | wall |")
    print("| --- | --- | " + " | ".join("---:" for _ in range(args.rounds)) + " | ---: | ---: |")
    for label, accuracies, clients, kills, seconds in rows:
        print(f"| {label} | {', '.join(map(str, clients))} | "
              + " | ".join(f"{100 * value:.2f} %" for value in accuracies) + f" | {kills} | {seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
