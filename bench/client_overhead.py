"""What a round costs with 3, 100 and 1000 clients on the same 60k images: the fixed cost each task pays.

    .venv/bin/python -m bench.client_overhead [--clients 3 100 1000] [--rounds 2] [--repo DIR]

Each size is one whole ``python -m runner`` process (``--repo`` picks the source tree, e.g. an export of an
older commit, to compare); a round's seconds (train + aggregate + evaluate) come from its metrics.json.
Round 1 includes starting the worker processes; round 2 on is the steady state the ratio uses. The
overhead per task is the extra worker-seconds a round with N clients costs over one with the fewest,
spread over the extra tasks: (round_N - round_3) x parallelism / (N - 3).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def run_rounds(repo: Path, data: Path, clients: int, rounds: int, parallelism: int) -> list[float]:
    """Seconds of each round of a fresh run with ``clients`` workers."""
    with tempfile.TemporaryDirectory() as volume:
        command = [sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), "--workers", str(clients),
                   "--rounds", str(rounds), "--run-id", "bench", "--parallelism", str(parallelism)]
        environment = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}
        subprocess.run(command, cwd=repo, env=environment, check=True, stdout=subprocess.DEVNULL)
        rounds_dir = Path(volume) / "runs" / "bench" / "rounds"
        return [
            sum(json.loads((rounds_dir / f"round-{number:03d}" / "metrics.json").read_text())["seconds"].values())
            for number in range(1, rounds + 1)
        ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 100, 1000])
    parser.add_argument("--rounds", type=int, default=2, help="rounds per run (2 or more: round 1 is the warm-up)")
    parser.add_argument("--repo", type=Path, default=REPO_ROOT, help="source tree to run (default: this one)")
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    parser.add_argument("--parallelism", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args(argv)
    if args.rounds < 2:
        raise SystemExit("--rounds must be at least 2")
    steady: dict[int, float] = {}
    for clients in args.clients:
        started = time.perf_counter()
        seconds = run_rounds(args.repo.resolve(), args.data.resolve(), clients, args.rounds, args.parallelism)
        steady[clients] = sorted(seconds[1:])[len(seconds[1:]) // 2]
        print(f"{clients:5d} clients: rounds {', '.join(f'{value:.1f}' for value in seconds)} s "
              f"(whole run {time.perf_counter() - started:.1f} s)", flush=True)
    fewest = min(steady)
    for clients, seconds in steady.items():
        if clients == fewest:
            continue
        overhead = (seconds - steady[fewest]) * args.parallelism / (clients - fewest)
        print(f"{clients:5d} clients: steady round {seconds:.1f} s = {seconds / steady[fewest]:.2f} x the "
              f"{fewest}-client round ({steady[fewest]:.1f} s); overhead {overhead:.3f} s per extra task")
    return 0


if __name__ == "__main__":
    sys.exit(main())
