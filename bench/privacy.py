"""User-level differential privacy at scale: accuracy and epsilon without DP, with clipping only, and with noise.

    .venv/bin/python -m bench.privacy [--rounds 30] [--workers 1000] [--clients-per-round 100] [--delta 1e-3]
    .venv/bin/python -m bench.privacy --workers 10000 --clients-per-round 1000 --baseline-rounds 1 --no-clip-only \
        --noise-multipliers 2   # 10x the clients a round: the clip norm from one round without DP, then DP only

Every row is a whole `python -m runner` run of our convnet on IID MNIST split over 1000 workers (60 images each),
100 sampled per round (seeded without DP; under DP drawn from the operating system's randomness, so every DP row
trains other clients), 2 local epochs of batch 10 at a constant client step. The fixed clip norm is the median
L2 norm of round 1's client updates in the run without DP, as McMahan et al. 2018 chose theirs; epsilon is what
the runs recorded (dp-accounting's RDP accountant, replace-one user-level: the tighter of 100 of 1000 sampled
without replacement and every client every round), at delta 1e-3, and the same accounting at delta 1e-5.
Accuracies and epsilons are the runs' own metrics.json.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from common.atomic import read_json
from aggregator.privacy import epsilon_after
from common.layout import RunLayout, data_path
from common.runconfig import load_config
from common.modelfile import open_model_file, read_weights

REPO_ROOT = Path(__file__).resolve().parents[1]


def run(volume: Path, data: Path, run_id: str, flags: list[str]) -> float:
    """One runner run on ``volume``; its wall time in seconds."""
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(data), "--run-id", run_id,
               "--min-accuracy", "0", *flags]
    started = time.monotonic()
    subprocess.run(command, cwd=REPO_ROOT, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def median_update_norm(layout: RunLayout, round_number: int = 1) -> float:
    """The median L2 norm of the round's client updates (client model minus the round's starting model)."""
    with open_model_file(layout.global_model_path(round_number - 1)) as handle:
        start = read_weights(handle)
    norms = []
    for path in sorted(layout.round_dir(round_number).glob("client-*.h5")):
        with open_model_file(path) as handle:
            weights = read_weights(handle)
        norms.append(np.sqrt(sum(np.sum((weights[name].astype(np.float64) - start[name]) ** 2) for name in start)))
    return float(statistics.median(norms))


def accuracies_and_epsilon(layout: RunLayout, rounds: int) -> tuple[list[float], float | None]:
    """Test accuracy after each round, and the epsilon recorded after the last."""
    metrics = [read_json(layout.metrics_path(number)) for number in range(1, rounds + 1)]
    privacy = metrics[-1].get("privacy") or {}
    return [entry["accuracy"] for entry in metrics], privacy.get("epsilon")


def epsilon_at_small_delta(layout: RunLayout, rounds: int, delta: float = 1e-5) -> float | None:
    """The same run's epsilon after ``rounds`` at another delta (the same accountant, from its run.json)."""
    config = load_config(layout.config_path)
    if config.dp_clip is None or config.dp_noise_multiplier == 0:
        return None
    return epsilon_after(type(config)(**{**config.to_dict(), "dp_delta": delta}), rounds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--workers", type=int, default=1000)
    parser.add_argument("--clients-per-round", type=int, default=100)
    parser.add_argument("--delta", type=float, default=1e-3)
    parser.add_argument("--noise-multipliers", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--baseline-rounds", type=int,
                        help="rounds of the run without DP (default --rounds); fewer only derive the clip norm from its "
                        "round 1 and leave that row out, for settings too large to train three times")
    parser.add_argument("--volume", type=Path,
                        help="keep the runs here (new run ids only), e.g. to follow a long one; default a temporary folder")
    parser.add_argument("--no-clip-only", action="store_true", help="leave out the run with clipping and no noise")
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.privacy: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    settings = ["--workers", str(args.workers), "--clients-per-round", str(args.clients_per_round), "--epochs", "2",
                "--batch-size", "10", "--learning-rate-decay", "1"]
    common = [*settings, "--rounds", str(args.rounds)]
    rows = []
    with tempfile.TemporaryDirectory() as temporary:
        volume = args.volume or Path(temporary)
        baseline_rounds = args.baseline_rounds or args.rounds
        seconds = run(volume, args.data, "no-dp", [*settings, "--rounds", str(baseline_rounds)])
        clip = median_update_norm(RunLayout(volume, "no-dp"))
        print(f"no DP: {seconds:.0f} s; median update norm in round 1: {clip:.4g} (the fixed clip norm)", flush=True)
        if baseline_rounds == args.rounds:
            rows.append(("no DP", None, *accuracies_and_epsilon(RunLayout(volume, "no-dp"), args.rounds), None, seconds))
        variants = [] if args.no_clip_only else [("clipping only", 0.0)]
        variants += [(f"clip + noise z = {z:g}", z) for z in args.noise_multipliers]
        for index, (label, noise) in enumerate(variants):
            run_id = f"dp-{index}"
            flags = [*common, "--dp-clip", f"{clip:.6g}", "--dp-noise-multiplier", str(noise), "--dp-delta", str(args.delta)]
            seconds = run(volume, args.data, run_id, flags)
            accuracies, epsilon = accuracies_and_epsilon(RunLayout(volume, run_id), args.rounds)
            small_delta = epsilon_at_small_delta(RunLayout(volume, run_id), args.rounds)
            rows.append((label, noise, accuracies, epsilon, small_delta, seconds))
            print(f"{label}: final {100 * accuracies[-1]:.2f} %, epsilon {epsilon}, {seconds:.0f} s", flush=True)
    marks = sorted({min(args.rounds, mark) for mark in (1, 5, 10, 20, args.rounds)})
    print(f"\n| run (clip {clip:.3g}) | " + " | ".join(f"round {mark}" for mark in marks)
          + f" | epsilon at delta {args.delta:g} | at delta 1e-05 | wall |")
    print("| --- | " + " | ".join("---:" for _ in marks) + " | ---: | ---: | ---: |")
    for label, _, accuracies, epsilon, small_delta, seconds in rows:
        epsilon_text = "none (no DP)" if label == "no DP" else ("no guarantee" if epsilon is None else f"{epsilon:.3g}")
        small_text = "" if small_delta is None else f"{small_delta:.3g}"
        print(f"| {label} | " + " | ".join(f"{100 * accuracies[mark - 1]:.2f} %" for mark in marks)
              + f" | {epsilon_text} | {small_text} | {seconds:.0f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
