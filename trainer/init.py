"""Start a run: save its configuration and the one initial model every trainer of round 1 starts from.

Command line: ``python -m trainer.init --volume V --run-id R --workers N --rounds K ... [--start-model PATH]``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.cli import user_errors
from common.layout import RunLayout
from common.runconfig import SPLIT_STRATEGIES, RunConfig, save_config


def initialize_run(layout: RunLayout, config: RunConfig) -> Path:
    """Write run.json and round 0's global model (seeded, or from ``config.start_model``); idempotent."""
    save_config(layout.config_path, config)
    initial_model_path = layout.global_model_path(0)
    if initial_model_path.is_file():
        return initial_model_path
    from common.model import build_model, load_model
    from trainer.train import save_model_with_metadata

    model = build_model(seed=config.seed)
    if config.start_model:
        start_model = Path(config.start_model)
        if not start_model.is_file():
            raise ValueError(f"--start-model {start_model}: file not found")
        try:
            loaded = load_model(start_model)
        except Exception as error:  # Keras raises many types for a file it cannot read
            raise ValueError(f"--start-model {start_model}: not a loadable Keras model ({error})") from None
        expected = [weight.shape for weight in model.weights]
        found = [weight.shape for weight in loaded.weights]
        if expected != found:
            raise ValueError(f"--start-model {start_model}: its architecture differs from this project's model")
        model = loaded
    save_model_with_metadata(model, initial_model_path, {"run_id": layout.run_id, "round": 0})
    return initial_model_path


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trainer.init", description="Save a run's configuration and its shared initial model."
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    add_config_arguments(parser)
    return parser


@user_errors("trainer.init")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    path = initialize_run(layout, config_from_arguments(args))
    print(f"run {layout.run_id}: initial model at {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
