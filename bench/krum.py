"""20 clients of which 4 send scaled or random updates: mean, median, trimmed mean and Krum side by side.

    .venv/bin/python -m bench.krum [--rounds 3] [--aggregations mean median ...] [--no-reference]
    .venv/bin/python -m bench.krum --rounds 1 --train-examples 6000      # a quick check on a slice of MNIST

One process (TensorFlow imported once, one ClientTrainer for every client): for each aggregation, a fresh run
on a temporary volume (20 workers, IID shards, seed 0, one local epoch a round, the project's other defaults;
krum and multi-krum told f = 4). Every round the 16 honest workers train as the pipeline's trainers do, then
workers 3, 8, 13 and 18 write their client files instead, and the real aggregator and accuracy test run:

- scaled (workers 3 and 8): the start model plus -10 (--scale) times the update of the honest worker before
  it (2 and 7): that update sign-flipped and scaled, so the two outweigh the 16 honest updates' sum in a mean.
- random (workers 13 and 18): the start model plus Gaussian noise whose standard deviation, weight by weight,
  is 10 (--noise-scale) times that of the 16 honest updates (seeded by the run's seed, the round and the worker).

Each attacker's file is an honest client file with its weights and worker replaced, so it passes the
aggregator's checks (run, round, starting model's sha256, example count of an honest shard). The reference
row "no attack, mean" trains all 20 workers honestly (plain FedAvg). Accuracy is on the 10k test set; for
krum and multi-krum the table also gives how many attackers each round's aggregate kept (aggregate.json).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from aggregator.aggregate import aggregate_round
from common.atomic import read_json
from common.data import load_mnist, save_arrays
from common.layout import RunLayout, data_path
from common.modelfile import open_model_file, read_metadata, read_weights, write_averaged_model
from common.runconfig import AGGREGATIONS, DEFAULT_TRIM_FRACTION, RunConfig
from splitter.split import write_shards
from trainer.initial import initialize_run

REPO_ROOT = Path(__file__).resolve().parents[1]
RUN_ID = "bench"
WORKERS = 20
# Attacker worker -> its attack; spread over the shards so no attack sits at one end of the worker list.
ATTACKS = {3: "scaled", 8: "scaled", 13: "random", 18: "random"}
REFERENCE = "no attack, mean"


@dataclass
class Result:
    """One table row: accuracy after each round, and for krum/multi-krum the attackers kept each round."""

    label: str
    accuracies: list[float] = field(default_factory=list)
    attackers_kept: list[int] | None = None


def make_config(aggregation: str, rounds: int, seed: int, trim_fraction: float) -> RunConfig:
    """The run's configuration: 20 workers, and f = 4 (the number of attackers) for the Krum family."""
    return RunConfig(
        workers=WORKERS,
        rounds=rounds,
        seed=seed,
        epochs=1,
        batch_size=64,
        aggregation=aggregation,
        byzantine_clients=len(ATTACKS) if aggregation in ("krum", "multi-krum") else None,
        trim_fraction=trim_fraction if aggregation == "trimmed-mean" else None,
    )


def sliced_data(data: Path, train_examples: int, directory: Path) -> Path:
    """A copy of MNIST with only the first ``train_examples`` training images (the test set whole), for quick checks."""
    mnist = load_mnist(data)
    path = directory / "mnist-slice.npz"
    save_arrays(path, x_train=mnist.x_train[:train_examples], y_train=mnist.y_train[:train_examples],
                x_test=mnist.x_test, y_test=mnist.y_test)
    return path


def model_weights(path: Path) -> dict[str, np.ndarray]:
    """Every weight of a model file, as float64."""
    with open_model_file(path) as handle:
        return {name: np.asarray(array, dtype=np.float64) for name, array in read_weights(handle).items()}


def write_attacker(layout: RunLayout, round_number: int, worker: int, template: Path,
                   weights: dict[str, np.ndarray]) -> None:
    """Write ``worker``'s client file: ``template`` (an honest client's file) with these weights and this worker."""
    with open_model_file(template) as handle:
        metadata = {**read_metadata(handle), "worker": worker}
        dtypes = {name: array.dtype for name, array in read_weights(handle).items()}
    # Each weight in its stored dtype (float32), as an honest trainer writes it.
    output = {name: weights[name].astype(dtype) for name, dtype in dtypes.items()}
    write_averaged_model(template, layout.client_model_path(round_number, worker), output, metadata)


def write_attackers(layout: RunLayout, round_number: int, honest: Sequence[int], seed: int,
                    scale: float, noise_scale: float) -> None:
    """The four byzantine clients' files of a round, made from the honest clients' updates."""
    start = model_weights(layout.global_model_path(round_number - 1))
    updates = {worker: {name: array - start[name] for name, array in
                        model_weights(layout.client_model_path(round_number, worker)).items()}
               for worker in honest}
    stddev = {name: np.stack([update[name] for update in updates.values()]).std(axis=0) for name in start}
    for worker, attack in ATTACKS.items():
        # The honest worker just before the attacker: its update (scaled) and its file (the template).
        source = max(other for other in honest if other < worker)
        if attack == "scaled":
            weights = {name: start[name] - scale * updates[source][name] for name in start}
        else:
            rng = np.random.default_rng((seed, round_number, worker))
            weights = {name: start[name] + rng.normal(0.0, noise_scale * stddev[name]) for name in start}
        write_attacker(layout, round_number, worker, layout.client_model_path(round_number, source), weights)


def run_one(label: str, config: RunConfig, data: Path, trainer, evaluation_model, attacked: bool,
            scale: float, noise_scale: float) -> Result:
    """One whole run on a fresh volume; the test accuracy after each round and the attackers Krum kept."""
    from evaluator.evaluate import evaluate

    result = Result(label, attackers_kept=[] if config.aggregation in ("krum", "multi-krum") else None)
    honest = [worker for worker in range(WORKERS) if not (attacked and worker in ATTACKS)]
    with tempfile.TemporaryDirectory(prefix="bench-krum-") as volume:
        layout = RunLayout(Path(volume), RUN_ID)
        initialize_run(layout, config)
        write_shards(layout, data, config.workers, config.split, config.alpha, config.seed)
        for round_number in range(1, config.rounds + 1):
            started = time.monotonic()
            for worker in honest:
                trainer.train(layout, round_number, worker, config.epochs, config.batch_size, config.seed)
            if attacked:
                write_attackers(layout, round_number, honest, config.seed, scale, noise_scale)
            aggregate_round(layout, round_number, config.workers)
            metrics = evaluate(layout.global_model_path(round_number), data, evaluation_model)
            result.accuracies.append(metrics["accuracy"])
            kept_note = ""
            if result.attackers_kept is not None:
                kept = read_json(layout.round_record_path(round_number))["krum"]["kept"]
                result.attackers_kept.append(len(set(kept) & set(ATTACKS)))
                kept_note = f", kept {len(kept)} clients, {result.attackers_kept[-1]} of them attackers"
            print(f"{label}, round {round_number}: {100 * metrics['accuracy']:.2f} %{kept_note} "
                  f"({time.monotonic() - started:.0f} s)", flush=True)
    return result


def percent(values: Sequence[float]) -> str:
    """Accuracies as comma-separated percentages."""
    return ", ".join(f"{100 * value:.2f}" for value in values)


def print_table(results: Sequence[Result], rounds: int) -> None:
    """The Markdown table of every row."""
    print(f"\n| aggregation | test accuracy after rounds 1..{rounds} (%) | final "
          f"| attackers kept per round (of {len(ATTACKS)}) |")
    print("|---|---|---:|---|")
    for result in results:
        kept = "–" if result.attackers_kept is None else ", ".join(str(count) for count in result.attackers_kept)
        print(f"| {result.label} | {percent(result.accuracies)} | {100 * result.accuracies[-1]:.2f} | {kept} |")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aggregations", nargs="+", choices=AGGREGATIONS, default=list(AGGREGATIONS))
    parser.add_argument("--trim-fraction", type=float, default=DEFAULT_TRIM_FRACTION,
                        help="trimmed-mean: share of clients cut from each end (0.2: 4 of 20, as many as attack)")
    parser.add_argument("--scale", type=float, default=10.0, help="scaled attackers send -scale times an honest update")
    parser.add_argument("--noise-scale", type=float, default=10.0,
                        help="random attackers' noise, in standard deviations of the honest updates (per weight)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-reference", action="store_true",
                        help=f"skip the row {REFERENCE!r} (20 honest clients)")
    parser.add_argument("--train-examples", type=int, help="use only the first N training images (quick checks)")
    parser.add_argument("--data", type=Path, default=data_path(REPO_ROOT / "volume"))
    args = parser.parse_args(argv)
    if not args.data.is_file():
        print(f"bench.krum: {args.data} missing: run `make data` first", file=sys.stderr)
        return 1
    from common.model import build_model
    from trainer.train import ClientTrainer

    started = time.monotonic()
    trainer = ClientTrainer()  # one compiled model for every client of every run
    evaluation_model = build_model()  # the accuracy test loads each global model's weights into it
    runs = [(aggregation, aggregation, True) for aggregation in args.aggregations]
    if not args.no_reference:
        runs.append((REFERENCE, "mean", False))
    results = []
    with tempfile.TemporaryDirectory(prefix="bench-krum-data-") as scratch:
        data = sliced_data(args.data, args.train_examples, Path(scratch)) if args.train_examples else args.data
        for label, aggregation, attacked in runs:
            config = make_config(aggregation, args.rounds, args.seed, args.trim_fraction)
            result = run_one(label, config, data, trainer, evaluation_model, attacked, args.scale, args.noise_scale)
            results.append(result)
            kept = "" if result.attackers_kept is None else f"; attackers kept per round: {result.attackers_kept}"
            print(f"{label}: {percent(result.accuracies)}{kept} ({time.monotonic() - started:.0f} s so far)", flush=True)
    print_table(results, args.rounds)
    print(f"\nwall time {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
