"""A run's configuration, saved as ``run.json`` so a resumed or re-submitted run can be checked against it."""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from pathlib import Path

from common.atomic import read_json, write_json

SPLIT_STRATEGIES = ("iid", "dirichlet")


@dataclass(frozen=True)
class RunConfig:
    """What defines a run's result; two runs with the same config and seed train the same way."""

    workers: int = 3
    rounds: int = 5  # measured: 99.23 % on the test set after 5 rounds, 98.98 % after 3 (README)
    epochs: int = 1
    batch_size: int = 64
    split: str = "iid"
    alpha: float = 0.5  # Dirichlet concentration: smaller means more label skew per worker.
    seed: int = 0
    start_model: str | None = None  # a published model to continue training, or None for a fresh seeded one

    def __post_init__(self) -> None:
        for name in ("workers", "rounds", "epochs", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name.replace('_', '-')} must be a whole number of at least 1, got {value!r}")
        if self.split not in SPLIT_STRATEGIES:
            raise ValueError(f"split must be one of {', '.join(SPLIT_STRATEGIES)}, got {self.split!r}")
        if not self.alpha > 0:
            raise ValueError(f"alpha must be greater than 0, got {self.alpha!r}")

    def to_dict(self) -> dict:
        return asdict(self)


def save_config(path: Path, config: RunConfig) -> None:
    """Write ``run.json``, or check that an existing one holds the same config (a run never changes shape)."""
    if Path(path).exists():
        existing = load_config(path)
        if existing != config:
            differences = {
                key: (value, getattr(config, key))
                for key, value in existing.to_dict().items()
                if value != getattr(config, key)
            }
            raise ValueError(
                f"{path} was made with a different configuration {differences} (existing, requested); "
                "use another --run-id for a new run"
            )
        return
    write_json(path, config.to_dict())


def load_config(path: Path) -> RunConfig:
    """Read ``run.json``."""
    payload = read_json(path)
    try:
        return RunConfig(**payload)
    except TypeError as error:
        raise ValueError(f"{path}: not a run configuration ({error})") from None


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags that make up a RunConfig, shared by this command and the local runner."""
    defaults = RunConfig()
    parser.add_argument("--workers", type=int, default=defaults.workers, help="number of trainers (shards)")
    parser.add_argument("--rounds", type=int, default=defaults.rounds, help="federated rounds")
    parser.add_argument("--epochs", type=int, default=defaults.epochs, help="local epochs per round")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="examples per gradient step")
    parser.add_argument("--split", choices=SPLIT_STRATEGIES, default=defaults.split, help="how to shard the data")
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="Dirichlet concentration (split=dirichlet)")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seeds the initial model, the split and training")
    parser.add_argument("--start-model", type=Path, help="continue training this .h5 model instead of a fresh one")


def config_from_arguments(args: argparse.Namespace) -> RunConfig:
    """The RunConfig the parsed flags describe."""
    return RunConfig(
        workers=args.workers,
        rounds=args.rounds,
        epochs=args.epochs,
        batch_size=args.batch_size,
        split=args.split,
        alpha=args.alpha,
        seed=args.seed,
        start_model=str(args.start_model.resolve()) if args.start_model else None,
    )
