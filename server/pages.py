"""The two HTML pages: the demo (draw or upload a digit) and the model page (how the served model was made)."""

from __future__ import annotations

from datetime import datetime

from flask import Blueprint, render_template

from server.probes import get_store

blueprint = Blueprint("pages", __name__)

CHART_WIDTH, CHART_HEIGHT, CHART_MARGIN = 560, 240, 56  # SVG units; the margin holds the axis labels


@blueprint.get("/")
def index():
    """Draw a digit or upload a picture; the page's script calls /api/predict."""
    model = get_store().current
    return render_template("index.html", version=model.version if model else None)


@blueprint.get("/model")
def model_page():
    """Version, training setup, test accuracy per round and the confusion matrix of the served model."""
    store = get_store()
    model = store.current
    if model is None:
        return render_template("model.html", model=None, reason=store.status()), 503
    info = model.info
    return render_template(
        "model.html",
        model=model,
        info=info,
        config=info.get("config") or {},
        published=readable_time(info.get("published_at")),
        chart=accuracy_chart(info.get("history") or []),
        partial_rounds=[entry for entry in info.get("history") or [] if entry.get("missing")],
        privacy=info.get("privacy") or None,
        epsilons=[{"round": entry["round"], "epsilon": entry["privacy"].get("epsilon")}
                  for entry in info.get("history") or [] if isinstance(entry.get("privacy"), dict) and "round" in entry],
        matrix=confusion_rows(info.get("confusion_matrix")),
        per_class=info.get("per_class_accuracy") or [],
    )


def readable_time(timestamp: str | None) -> str:
    """ISO 8601 -> '2026-11-25 10:00 UTC' (or the text as is if it is not ISO)."""
    if not timestamp:
        return "unknown"
    try:
        return datetime.fromisoformat(timestamp).strftime("%Y-%m-%d %H:%M %Z").strip()
    except ValueError:
        return timestamp


def accuracy_chart(history: list[dict]) -> dict | None:
    """SVG coordinates of test accuracy per round: points, axis ticks and the polyline."""
    points = [(entry["round"], entry["accuracy"]) for entry in history if "round" in entry and "accuracy" in entry]
    if not points:
        return None
    rounds = [round_number for round_number, _ in points]
    lowest = min(accuracy for _, accuracy in points)
    bottom = max(0.0, int(lowest * 50 - 1) / 50)  # a 2-point grid below the worst round, so the rise is visible
    first, last = min(rounds), max(rounds)
    inset = 24  # keeps the first and last point (and their labels) clear of the axis labels
    plot_width, plot_height = CHART_WIDTH - 2 * CHART_MARGIN - 2 * inset, CHART_HEIGHT - 2 * CHART_MARGIN

    def x(round_number: int) -> float:
        offset = plot_width * (round_number - first) / (last - first) if last > first else plot_width / 2
        return CHART_MARGIN + inset + offset

    def y(accuracy: float) -> float:
        return CHART_MARGIN + plot_height * (1.0 - (accuracy - bottom) / (1.0 - bottom or 1.0))

    ticks = [bottom + (1.0 - bottom) * step / 4 for step in range(5)]
    whole = all(abs(value * 100 - round(value * 100)) < 1e-6 for value in ticks)
    return {
        "width": CHART_WIDTH,
        "height": CHART_HEIGHT,
        "left": CHART_MARGIN,
        "right": CHART_WIDTH - CHART_MARGIN,
        "points": [{"x": x(r), "y": y(a), "round": r, "accuracy": a} for r, a in points],
        "polyline": " ".join(f"{x(r):.1f},{y(a):.1f}" for r, a in points),
        "y_ticks": [{"y": y(value), "label": f"{value:.0%}" if whole else f"{value:.1%}"} for value in ticks],
    }


def confusion_rows(matrix) -> list[dict] | None:
    """Each true digit's row of counts with a shade per cell (share of that row), for the heat-map table."""
    if not isinstance(matrix, list) or len(matrix) != 10:
        return None
    rows = []
    for digit, counts in enumerate(matrix):
        total = sum(counts) or 1
        rows.append(
            {
                "digit": digit,
                "cells": [
                    {"count": count, "share": count / total, "correct": predicted == digit}
                    for predicted, count in enumerate(counts)
                ],
            }
        )
    return rows
