"""Probes for the orchestrator and the monitoring: liveness, readiness and Prometheus metrics."""

from __future__ import annotations

from flask import Blueprint, Response, abort, current_app, jsonify
from prometheus_client import CONTENT_TYPE_LATEST

from server.model_store import LoadedModel, ModelStore

blueprint = Blueprint("probes", __name__)


def get_store() -> ModelStore:
    """The app's model store (made by ``create_app``)."""
    return current_app.extensions["mnist_model_store"]


def get_model() -> LoadedModel:
    """The model to answer this request with; 503 with the reason while there is none."""
    store = get_store()
    model = store.wait_for_model(timeout=float(current_app.config["MODEL_WAIT_TIMEOUT"]))
    if model is None:
        abort(503, description=store.status())
    return model


@blueprint.get("/healthz")
def healthz():
    """Liveness: the process answers (never looks at the model, so a slow load is not a restart)."""
    return jsonify(status="ok")


@blueprint.get("/readyz")
def readyz():
    """Readiness: 200 once a model is loaded, 503 before (no model published yet, or still loading)."""
    store = get_store()
    model = store.current
    if model is None:
        return jsonify(status="not ready", reason=store.status()), 503
    return jsonify(status="ready", model_version=model.version)


@blueprint.get("/metrics")
def metrics():
    """Prometheus text format."""
    return Response(current_app.extensions["mnist_metrics"].exposition(), mimetype=CONTENT_TYPE_LATEST)
