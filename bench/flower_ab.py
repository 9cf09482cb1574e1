"""This project's local run against Flower's simulation and against centralized training of the same work.

    .venv/bin/python -m bench.flower_ab [--triples 2] [--rounds 3]

The same work three ways, each a whole process (start-up, data, training, a test-set evaluation) measured for
wall time and peak PSS of its whole process tree (bench.run_memory):
  project:     python -m runner --workers 3 --rounds R (E = 1, B = 64, seed 0)
  Flower:      bench/flower_app.py: 3 clients, R rounds, our model, split, schedule and seeds, in Flower's
               simulation (Ray), evaluating after each round as our runner does
  centralized: bench/central.py: the same model on all 60k for R epochs at the rounds' learning rates
Flower is a benchmark-only dependency: the first run creates .venv-flower from bench/flower-requirements.txt
(never `make run`). Runs interleave project / Flower / centralized; prints medians and ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.run_memory import measure_command

REPO_ROOT = Path(__file__).resolve().parents[1]
FLOWER_VENV = REPO_ROOT / ".venv-flower"
FLOWER_REQUIREMENTS = REPO_ROOT / "bench" / "flower-requirements.txt"


def flower_python() -> Path:
    """The Flower venv's interpreter, creating the venv on first use."""
    python = FLOWER_VENV / "bin" / "python"
    if not python.is_file():
        print(f"installing Flower into {FLOWER_VENV} (once) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(FLOWER_VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "-r", str(FLOWER_REQUIREMENTS)], check=True)
    return python


def last_json_line(path: Path) -> dict:
    return json.loads(path.read_text().strip().splitlines()[-1])


def run_project(data: Path, rounds: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as volume:
        command = [sys.executable, "-m", "runner", "--volume", volume, "--data", str(data), "--workers", "3",
                   "--rounds", str(rounds), "--run-id", "ab"]
        seconds, peak = measure_command(command, REPO_ROOT)
        metrics = json.loads((Path(volume) / "runs" / "ab" / "rounds" / f"round-{rounds:03d}" / "metrics.json").read_text())
    return seconds, peak, metrics["accuracy"]


def run_flower(data: Path, rounds: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "out"
        command = [str(flower_python()), "-m", "bench.flower_app", "--data", str(data), "--clients", "3",
                   "--rounds", str(rounds)]
        seconds, peak = measure_command(command, REPO_ROOT, output)
        return seconds, peak, last_json_line(output)["accuracy"]


def run_central(data: Path, rounds: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as directory:
        output = Path(directory) / "out"
        command = [sys.executable, "-m", "bench.central", "--data", str(data), "--epochs", str(rounds),
                   "--batch-size", "64"]
        seconds, peak = measure_command(command, REPO_ROOT, output)
        return seconds, peak, last_json_line(output)["accuracy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--triples", type=int, default=2, help="interleaved project / Flower / centralized runs")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--data", type=Path, default=REPO_ROOT / "volume" / "data" / "mnist.npz")
    args = parser.parse_args(argv)
    data = args.data.resolve()
    flower_python()
    sides = {"project": run_project, "Flower": run_flower, "centralized": run_central}
    results: dict[str, list[tuple[float, float, float]]] = {name: [] for name in sides}
    for triple in range(args.triples):
        for name, run in sides.items():
            results[name].append(run(data, args.rounds))
            seconds, peak, accuracy = results[name][-1]
            print(f"{triple + 1} {name}: {seconds:.1f} s, peak PSS {peak:.0f} MiB, accuracy {accuracy:.4f}", flush=True)
    medians = {name: [statistics.median(run[index] for run in runs) for index in range(3)]
               for name, runs in results.items()}
    for name, (seconds, peak, accuracy) in medians.items():
        print(f"{name}: median {seconds:.1f} s, peak PSS {peak:.0f} MiB, accuracy {accuracy:.4f}")
    project_seconds, project_peak, _ = medians["project"]
    print(f"project / Flower: wall {project_seconds / medians['Flower'][0]:.2f} (target <= 0.7), "
          f"peak PSS {project_peak / medians['Flower'][1]:.2f} (target <= 0.6)")
    print(f"project / centralized: wall {project_seconds / medians['centralized'][0]:.2f} (target <= 1.10), "
          f"peak PSS {project_peak / medians['centralized'][1]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
