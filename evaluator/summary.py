"""What became of a run, in one file on the volume: ``python -m evaluator.summary --volume V --run-id R``.

The Argo workflow runs it as its exit handler, after success and failure alike, so that
runs/<run-id>/summary.json says how far the run got even after its pods are gone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from common.atomic import write_json
from common.cli import ArgumentParser, user_errors
from common.layout import RunLayout
from aggregator.record import missing_count
from common.history import evaluated_rounds
from publisher.publish import find_published


def run_summary(layout: RunLayout, status: str) -> dict:
    """The run's status, the accuracy of each round evaluated so far, and the version it was published as."""
    history = evaluated_rounds(layout)
    last_round = history[-1]["round"] if history else None
    return {
        "run_id": layout.run_id,
        "status": status,
        "rounds_evaluated": len(history),
        "history": history,
        "final_accuracy": history[-1]["accuracy"] if history else None,
        "missing_clients": sum(missing_count(entry.get("missing", [])) for entry in history),
        "privacy": history[-1].get("privacy") if history else None,
        "published_version": find_published(layout.volume, layout.run_id, last_round) if history else None,
    }


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m evaluator.summary", description=__doc__.split("\n\n")[0])
    parser.add_argument("--volume", type=Path, required=True, help="the shared volume")
    parser.add_argument("--run-id", required=True, help="the run's directory name under runs/")
    parser.add_argument("--status", default="unknown", help="how the run ended (Argo's {{workflow.status}})")
    return parser


@user_errors("evaluator.summary")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    layout = RunLayout(args.volume, args.run_id)
    if not layout.run_dir.is_dir():
        raise ValueError(f"{layout.run_dir}: no such run")
    summary = run_summary(layout, args.status)
    write_json(layout.summary_path, summary)
    accuracies = ", ".join(f"{entry['accuracy']:.4f}" for entry in summary["history"]) or "none"
    published = summary["published_version"]
    privacy = summary["privacy"]
    spent = ""
    if privacy:
        epsilon = privacy.get("epsilon")
        spent = f"; epsilon {epsilon:.3g} at delta {privacy['delta']:.3g}" if epsilon is not None else "; DP without noise"
    missing = f"; {summary['missing_clients']} client(s) missing over the run" if summary["missing_clients"] else ""
    print(f"run {layout.run_id} {args.status}: test accuracy per round {accuracies}{missing}{spent}; "
          f"{f'published as version {published}' if published else 'not published'} ({layout.summary_path})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
