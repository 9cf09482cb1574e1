"""Peak memory (PSS of the runner and all its processes together) and wall time of a local run, A/B against another tree.

    .venv/bin/python -m bench.run_memory --baseline DIR [--pairs 2] [--rounds 3]

DIR is another source tree (e.g. ``git archive main | tar -x -C DIR``). Runs alternate baseline / this tree,
each a whole ``python -m runner`` process with 3 workers; the process tree's summed PSS (shared pages split
between the processes that share them) is sampled from /proc every 0.2 s. Prints medians and ratios.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def process_tree(pid: int) -> list[int]:
    """``pid`` and every process below it."""
    tree, pending = [pid], [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = [int(child) for child in (task / "children").read_text().split()]
            except OSError:
                continue
            tree.extend(children)
            pending.extend(children)
    return tree


def pss_mib(pid: int) -> float:
    """Proportional set size of one process in MiB (0 once it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def measure_command(command: list[str], repo: Path, output: Path | None = None) -> tuple[float, float]:
    """(wall seconds, peak summed PSS in MiB) of ``command`` and all its processes, run in ``repo``."""
    environment = {**os.environ, "PYTHONPATH": str(repo), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with open(output or os.devnull, "w") as stdout:
        started = time.perf_counter()
        process = subprocess.Popen(command, cwd=repo, env=environment, stdout=stdout, stderr=subprocess.DEVNULL)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, sum(pss_mib(pid) for pid in process_tree(process.pid)))
            time.sleep(0.2)
        seconds = time.perf_counter() - started
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command[:3])} in {repo} failed with exit code {process.returncode}")
    return seconds, peak


def measure(repo: Path, data: Path, rounds: int) -> tuple[float, float]:
    """(wall seconds, peak summed PSS in MiB) of one 3-worker run of the runner in ``repo``."""
    with tempfile.TemporaryDirectory() as volume:
        command = [sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), "--workers", "3",
                   "--rounds", str(rounds), "--run-id", "memory"]
        return measure_command(command, repo)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="the other source tree")
    parser.add_argument("--pairs", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    args = parser.parse_args(argv)
    results: dict[str, list[tuple[float, float]]] = {"baseline": [], "this tree": []}
    for pair in range(args.pairs):
        for name, repo in (("baseline", args.baseline.resolve()), ("this tree", REPO_ROOT)):
            results[name].append(measure(repo, args.data.resolve(), args.rounds))
            seconds, peak = results[name][-1]
            print(f"pair {pair + 1} {name}: {seconds:.1f} s, peak PSS {peak:.0f} MiB", flush=True)
    medians = {name: (statistics.median(s for s, _ in runs), statistics.median(p for _, p in runs))
               for name, runs in results.items()}
    for name, (seconds, peak) in medians.items():
        print(f"{name}: median {seconds:.1f} s, peak PSS {peak:.0f} MiB")
    (base_seconds, base_peak), (seconds, peak) = medians["baseline"], medians["this tree"]
    print(f"this tree / baseline: wall {seconds / base_seconds:.2f}, peak PSS {peak / base_peak:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
