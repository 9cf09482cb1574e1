"""A run's accuracy per round, read from the metrics.json files its accuracy tests wrote: no TensorFlow."""

from __future__ import annotations

from common.atomic import read_json
from common.layout import RunLayout
from common.runconfig import load_config


def round_history(layout: RunLayout, last_round: int) -> list[dict]:
    """Accuracy and loss of rounds 1..``last_round``; a round that was not evaluated is an error."""
    history = []
    for round_number in range(1, last_round + 1):
        metrics_path = layout.metrics_path(round_number)
        if not metrics_path.is_file():
            raise ValueError(f"{metrics_path}: round {round_number} was not evaluated; run the evaluator first")
        metrics = read_json(metrics_path)
        entry = {"round": round_number, "accuracy": metrics["accuracy"], "loss": metrics["loss"]}
        # Rounds since records exist: how many clients, which were missing, the privacy spent so far.
        entry.update({key: metrics[key] for key in ("clients", "missing", "privacy") if key in metrics})
        history.append(entry)
    return history


def evaluated_rounds(layout: RunLayout) -> list[dict]:
    """The history of the rounds evaluated so far, up to the first one that was not (a run may have stopped)."""
    last_round = 0
    while layout.metrics_path(last_round + 1).is_file():
        last_round += 1
    return round_history(layout, last_round)


def final_round(layout: RunLayout) -> int:
    """The round whose global model is the run's result: its last, or the last within its privacy budget."""
    if not layout.config_path.is_file():
        raise ValueError(f"{layout.config_path}: no such run configuration; was the run started (trainer.init)?")
    # The budget's arithmetic lives with the rest of the privacy accounting (common/ otherwise needs no aggregator/).
    from aggregator.privacy import last_round_within_budget

    return last_round_within_budget(load_config(layout.config_path))
