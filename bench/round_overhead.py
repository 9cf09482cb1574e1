"""Per-round orchestration overhead of a finished run, from its files alone: a round's wall time minus its
slowest trainer's compute.

    .venv/bin/python -m bench.round_overhead --run-dir VOLUME/runs/RUN_ID --trainers T

A round starts when the coordinator publishes its ``clients.json`` and ends when its ``global.h5`` is written.
A trainer's compute in the round is the sum over its clients (common/rounds.py's share: the i-th client belongs
to trainer i % T) of each client's training, from its last ``attempts-NNN.json`` (written as the client starts)
to its ``client-NNN.h5``. What is left is what the design costs: noticing the round began, loading the round's
model, waiting for the slowest trainer's siblings to be seen, aggregating. The same files exist locally and on
the cluster, so both are measured the same way.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path


def client_seconds(round_dir: Path, worker: int) -> float:
    """How long the client's last attempt took, from its attempts note to its model file."""
    model, attempts = round_dir / f"client-{worker:03d}.h5", round_dir / f"attempts-{worker:03d}.json"
    if not model.is_file() or not attempts.is_file():
        return 0.0  # missing, or trained before attempts were counted: no compute to subtract
    return max(0.0, model.stat().st_mtime - attempts.stat().st_mtime)


def round_overheads(run_dir: Path, trainers: int) -> list[dict]:
    """For every aggregated round: wall seconds, the slowest trainer's compute seconds, and their difference."""
    rows = []
    for round_dir in sorted(Path(run_dir).glob("rounds/round-*")):
        clients_path, global_path = round_dir / "clients.json", round_dir / "global.h5"
        if round_dir.name == "round-000" or not clients_path.is_file() or not global_path.is_file():
            continue
        clients = json.loads(clients_path.read_text())
        compute = max(
            (sum(client_seconds(round_dir, worker) for worker in clients[trainer::trainers]) for trainer in range(trainers)),
            default=0.0,
        )
        wall = global_path.stat().st_mtime - clients_path.stat().st_mtime
        rows.append({"round": int(round_dir.name.split("-")[1]), "wall": wall, "compute": compute, "overhead": wall - compute})
    return rows


def median_overhead(run_dir: Path, trainers: int) -> float:
    """The p50 over the run's rounds of the per-round overhead."""
    return statistics.median(row["overhead"] for row in round_overheads(run_dir, trainers))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run-dir", type=Path, required=True, help="VOLUME/runs/RUN_ID of a finished run")
    parser.add_argument("--trainers", type=int, required=True, help="how many trainers the run had")
    args = parser.parse_args(argv)
    rows = round_overheads(args.run_dir, args.trainers)
    if not rows:
        parser.error(f"{args.run_dir}: no aggregated round with a clients.json")
    for row in rows:
        print(f"round {row['round']:3d}: wall {row['wall']:6.1f} s, slowest trainer {row['compute']:6.1f} s, "
              f"overhead {row['overhead']:5.1f} s")
    print(f"p50 overhead over {len(rows)} rounds: {median_overhead(args.run_dir, args.trainers):.2f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
