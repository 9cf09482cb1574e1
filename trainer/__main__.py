"""Command line: ``python -m trainer --volume V --run-id R --round K --worker I``: one client, as run.json says.

The Argo workflow runs trainer.serve (every round in one process); this trains one client by hand.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.backend import configure_backend
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from common.runconfig import load_config
from trainer.train import ClientTrainer, argo_progress_writer


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m trainer",
        description="Train one worker's shard for one round, starting from the previous round's global model. "
        "Uses a GPU when the Keras backend (KERAS_BACKEND, default tensorflow) sees one.",
    )
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume (local directory or NFS mount)")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--round", type=int, required=True, help="round number, 1 or more")
    parser.add_argument("--worker", type=int, required=True, help="which shard to train, 0 .. workers-1")
    return parser


@user_errors("trainer")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if not layout.config_path.is_file():
        raise ValueError(f"{layout.config_path}: no such run configuration; run `python -m trainer.init` first")
    config = load_config(layout.config_path)
    if config.dp_clip is not None and layout.global_model_path(args.round).is_file():
        # A trainer retried after its round was aggregated: under DP the raw updates are deleted, never remade.
        print(f"round {args.round} worker {args.worker}: the round is aggregated already; not trained again")
        return 0
    configure_backend()
    result = ClientTrainer().train(
        layout, args.round, args.worker, config.epochs, config.batch_size, config.seed, progress=argo_progress_writer()
    )
    print(
        f"round {args.round} worker {args.worker}: {result['num_examples']} examples, "
        f"train accuracy {result['train_accuracy']:.4f}, {result['seconds']:.1f} s "
        f"-> {layout.client_model_path(args.round, args.worker)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
