"""Command line: the accuracy test.

    python -m evaluator --volume V --run-id R --round K     # a round's global model; writes the round's metrics.json
    python -m evaluator --model PATH --data MNIST.npz        # any model file
    python -m evaluator --volume V                           # the newest published model

With --accuracy-file and --history-file it also leaves the accuracy (e.g. ``0.9923``) and, for a round, the
run's accuracy per round so far (a JSON list) in small files: Argo reads them as the step's output parameters.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aggregator.record import round_facts
from common.atomic import read_json, write_json, write_text
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout, data_path, models_dir, newest_version_dir, published_model_path
from evaluator.evaluate import evaluate
from common.history import final_round, round_history
from common.modelfile import sha256_of_file


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(
        prog="python -m evaluator",
        description="Accuracy test: evaluate a model on the 10,000 MNIST test images.",
        epilog=__doc__.split("\n\n", 1)[1] if __doc__ else None,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--volume", type=Path, help="the shared volume; alone, evaluates the newest published model")
    parser.add_argument("--run-id", help="with --round: evaluate that run's round")
    parser.add_argument("--round", type=int, help="with --run-id: evaluate the global model of this round")
    parser.add_argument("--last-round", action="store_true", help="with --run-id: the run's final round (run.json)")
    parser.add_argument("--model", type=Path, help="evaluate this .h5 file instead")
    parser.add_argument("--data", type=Path, help="MNIST npz (default: <volume>/data/mnist.npz)")
    parser.add_argument("--output", type=Path, help="write metrics JSON here (default for a round: its metrics.json)")
    parser.add_argument("--min-accuracy", type=float, help="exit 1 if test accuracy is below this (0-1)")
    parser.add_argument("--accuracy-file", type=Path, help="also write the test accuracy here, as one number")
    parser.add_argument("--history-file", type=Path,
                        help="with --run-id/--round: also write the run's accuracy per round so far here (JSON list)")
    return parser


def resolve_model_and_output(args: argparse.Namespace) -> tuple[Path, Path | None]:
    """Which model file the flags name, and where its metrics go."""
    if args.model is not None:
        if args.run_id is not None or args.round is not None:
            raise ValueError("give either --model or --run-id/--round, not both")
        return args.model, args.output
    if args.volume is None:
        raise ValueError("name a model: --model PATH, --volume V --run-id R --round K, or --volume V")
    if (args.run_id is None) != (args.round is None):
        raise ValueError("--run-id and --round go together")
    if args.run_id is not None:
        layout = RunLayout(args.volume, args.run_id)
        return layout.global_model_path(args.round), args.output or layout.metrics_path(args.round)
    version_dir = newest_version_dir(models_dir(args.volume))
    if version_dir is None:
        raise ValueError(f"no published model in {models_dir(args.volume)}")
    return published_model_path(version_dir), args.output


def recorded_metrics(model_path: Path, metrics_path: Path | None) -> dict | None:
    """A round's metrics.json if it is the accuracy test of exactly this model file (the coordinator wrote it)."""
    if metrics_path is None or not metrics_path.is_file() or not model_path.is_file():
        return None
    metrics = read_json(metrics_path)
    if not isinstance(metrics, dict) or metrics.get("model_sha256") != sha256_of_file(model_path):
        return None
    return metrics


@user_errors("evaluator")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.last_round:
        if args.round is not None or args.run_id is None or args.volume is None:
            raise ValueError("--last-round needs --volume and --run-id, and no --round")
        args.round = final_round(RunLayout(args.volume, args.run_id))
    if args.min_accuracy is not None and not 0.0 <= args.min_accuracy <= 1.0:
        raise ValueError(f"--min-accuracy must be between 0 and 1, got {args.min_accuracy}")
    model_path, output_path = resolve_model_and_output(args)
    if args.history_file is not None and args.round is None:
        raise ValueError("--history-file needs --run-id and --round")
    data = args.data or (data_path(args.volume) if args.volume else None)
    if data is None:
        raise ValueError("--data is required with --model")
    metrics = recorded_metrics(model_path, output_path) if args.round is not None else None
    if metrics is None:
        metrics = evaluate(model_path, data)
        metrics["model_sha256"] = sha256_of_file(model_path)
    if args.round is not None:
        metrics.update(round_facts(RunLayout(args.volume, args.run_id), args.round), round=args.round)
    if output_path is not None:
        write_json(output_path, metrics)
    if args.accuracy_file is not None:
        write_text(args.accuracy_file, f"{metrics['accuracy']:.4f}")
    if args.history_file is not None:
        history = round_history(RunLayout(args.volume, args.run_id), args.round)
        write_text(args.history_file, json.dumps([round(entry["accuracy"], 4) for entry in history]))
    print(f"{model_path}: test accuracy {metrics['accuracy']:.4f}, loss {metrics['loss']:.4f}")
    if args.min_accuracy is not None and metrics["accuracy"] < args.min_accuracy:
        print(
            f"evaluator: FAILED: accuracy {metrics['accuracy']:.4f} is below --min-accuracy {args.min_accuracy}",
            file=sys.stderr,
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
