"""Aggregator wall time and peak memory for 3, 10 and 100 clients: memory should stay flat in N.

    .venv/bin/python -m bench.aggregator_memory [--clients 3 10 100] [--repeats 3]

Each measurement runs ``python -m aggregator`` in its own process and reads that process's peak
resident memory (ru_maxrss); the client models are copies of a real model with the real weight shapes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np

from common.layout import RunLayout
from common.modelfile import sha256_of_file
from common.runconfig import RunConfig, save_config

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "bench"


def make_template_model(path: Path) -> None:
    """One real model file, made by a subprocess so this script never imports TensorFlow."""
    code = (
        "import sys; from common.model import build_model; from common.modelfile import save_model_with_metadata; "
        "save_model_with_metadata(build_model(seed=0), __import__('pathlib').Path(sys.argv[1]), {'run_id': 'bench', 'round': 0})"
    )
    subprocess.run([sys.executable, "-c", code, str(path)], cwd=REPO_ROOT, check=True,
                   env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})


def make_round(volume: Path, template: Path, num_clients: int) -> None:
    """A run of ``num_clients`` workers (run.json: the aggregator reads them there) whose round 1 has a client
    from each: the template's shapes with random weights."""
    layout = RunLayout(volume, RUN_ID)
    save_config(layout.config_path, RunConfig(workers=num_clients))
    round_dir = volume / "runs" / RUN_ID / "rounds"
    (round_dir / "round-000").mkdir(parents=True, exist_ok=True)
    start = round_dir / "round-000" / "global.h5"
    shutil.copyfile(template, start)
    start_sha = sha256_of_file(start)
    rng = np.random.default_rng(0)
    (round_dir / "round-001").mkdir(exist_ok=True)
    for worker in range(num_clients):
        client = round_dir / "round-001" / f"client-{worker:03d}.h5"
        shutil.copyfile(template, client)
        with h5py.File(client, "r+") as handle:
            def randomize(name, item):
                if isinstance(item, h5py.Dataset):
                    item[...] = rng.normal(size=item.shape).astype(item.dtype)
            handle["model_weights"].visititems(randomize)
            handle.attrs.update({"run_id": RUN_ID, "round": 1, "worker": worker,
                                 "num_examples": int(rng.integers(100, 1000)), "global_sha256": start_sha})


def measure(volume: Path, num_clients: int) -> tuple[float, float]:
    """(seconds, peak MiB) of one aggregator process."""
    command = [sys.executable, "-m", "aggregator", "--volume", str(volume), "--run-id", RUN_ID, "--round", "1"]
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"aggregator failed for {num_clients} clients")
    (volume / "runs" / RUN_ID / "rounds" / "round-001" / "global.h5").unlink()
    return seconds, usage.ru_maxrss / 1024


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, nargs="+", default=[3, 10, 100])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as workspace:
        template = Path(workspace) / "template.h5"
        make_template_model(template)
        model_mib = template.stat().st_size / 2**20
        volumes = {}
        for count in args.clients:
            volumes[count] = Path(workspace) / f"volume-{count}"
            make_round(volumes[count], template, count)
        results: dict[int, list[tuple[float, float]]] = {count: [] for count in args.clients}
        for _ in range(args.repeats):  # interleaved, so a slow moment of the machine hits every N alike
            for count in args.clients:
                results[count].append(measure(volumes[count], count))
    baseline_count = args.clients[0]
    baseline_memory = statistics.median(mib for _, mib in results[baseline_count])
    print(f"model file: {model_mib:.2f} MiB; medians of {args.repeats} interleaved runs")
    print(f"{'clients':>8} {'seconds':>9} {'peak MiB':>9} {'memory vs N=' + str(baseline_count):>16}")
    for count in args.clients:
        seconds = statistics.median(s for s, _ in results[count])
        memory = statistics.median(m for _, m in results[count])
        print(f"{count:>8} {seconds:>9.2f} {memory:>9.1f} {memory / baseline_memory:>15.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
