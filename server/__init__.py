"""The web demo and prediction API: ``create_app()`` builds the Flask app; nothing happens at import time.

Production: ``gunicorn -c server/gunicorn.conf.py "server:create_app()"``; locally: ``python -m server``. The server
imports Flask, numpy, Pillow, the LiteRT interpreter and prometheus-client, never TensorFlow (requirements-server.txt).
"""

from __future__ import annotations

import io
import logging
import time
from pathlib import Path

from flask import Flask, Request, g, jsonify, request
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.formparser import FormDataParser

from common.layout import models_dir
from server.json_provider import OrjsonProvider
from server.metrics import Metrics
from server.model_store import ModelStore
from server.preprocess import MAX_PIXELS, BadImage

logger = logging.getLogger(__name__)

DEFAULT_CONFIG = {
    "MODEL_DIR": str(models_dir(Path("volume"))),
    "RELOAD_INTERVAL": 1.0,  # seconds between looks for a newer published version
    "INFERENCE_THREADS": 1,  # threads per model call (see common/litert.py)
    "MODEL_WAIT_TIMEOUT": 30.0,  # a predict that arrives while the first model loads waits this long for it
    "MAX_CONTENT_LENGTH": 10 * 1024 * 1024,  # a phone photo is 2-6 MB; bigger bodies get 413 before being read
    "MAX_IMAGE_PIXELS": MAX_PIXELS,  # decompression-bomb guard: refuse headers claiming more pixels than this
    "MAX_IMAGES": 64,  # images per /api/predict request
    "MAX_INSTANCES": 1024,  # images per TF-Serving or V2 request (28x28 floats are ~5 KB of JSON each)
}


def in_memory_stream(*args, **kwargs) -> io.BytesIO:
    return io.BytesIO()


class InMemoryRequest(Request):
    """A request whose uploaded files stay in memory: never spooled to disk (the body is capped in size)."""

    def make_form_data_parser(self) -> FormDataParser:
        return self.form_data_parser_class(
            stream_factory=in_memory_stream,
            max_form_memory_size=self.max_form_memory_size,
            max_content_length=self.max_content_length,
            max_form_parts=self.max_form_parts,
            cls=self.parameter_storage_class,
        )


def create_app(test_config: dict | None = None) -> Flask:
    """Build the app: defaults, then the environment (``MNIST_MODEL_DIR``, ``MNIST_RELOAD_INTERVAL`` ...), then
    ``test_config`` (tests, and ``python -m server``'s flags)."""
    app = Flask(__name__)
    app.request_class = InMemoryRequest
    app.json = OrjsonProvider(app)
    app.config.from_mapping(DEFAULT_CONFIG)
    app.config.from_prefixed_env("MNIST")
    if test_config is not None:
        app.config.from_mapping(test_config)

    metrics = Metrics()
    store = ModelStore(
        Path(app.config["MODEL_DIR"]),
        reload_interval=float(app.config["RELOAD_INTERVAL"]),
        inference_threads=int(app.config["INFERENCE_THREADS"]),
        on_load=lambda version, outcome: record_model_load(metrics, version, outcome),
    )
    app.extensions["mnist_model_store"] = store
    app.extensions["mnist_metrics"] = metrics

    from server import api, pages, probes, tfserving, v2

    app.register_blueprint(probes.blueprint)
    app.register_blueprint(api.blueprint)
    app.register_blueprint(tfserving.blueprint)
    app.register_blueprint(v2.blueprint)
    app.register_blueprint(pages.blueprint)
    register_error_handlers(app)
    register_request_metrics(app, store, metrics)
    return app


def record_model_load(metrics: Metrics, version: int, outcome: str) -> None:
    metrics.model_loads.labels(outcome).inc()
    if outcome == "ok":
        metrics.model_version.set(version)


def register_request_metrics(app: Flask, store: ModelStore, metrics: Metrics) -> None:
    """Start the model watcher with the first request of each process, and time and count every request."""

    @app.before_request
    def start_clock() -> None:
        store.start()  # cheap after the first call (gunicorn.conf.py starts it when a worker starts)
        g.started = time.perf_counter()

    @app.after_request
    def record(response):
        endpoint = request.url_rule.rule if request.url_rule is not None else "unmatched"
        metrics.requests.labels(endpoint, request.method, str(response.status_code)).inc()
        if "started" in g:
            metrics.latency.labels(endpoint).observe(time.perf_counter() - g.started)
        return response


def register_error_handlers(app: Flask) -> None:
    """Every error is JSON ``{"error": "..."}`` with a 4xx status for bad input; only real bugs are 500."""

    @app.errorhandler(BadImage)
    def bad_image(error: BadImage):
        return jsonify(error=str(error)), error.status

    @app.errorhandler(RequestEntityTooLarge)
    def too_large(error: RequestEntityTooLarge):
        if error.description != RequestEntityTooLarge.description:  # our own message (too many images ...)
            return jsonify(error=error.description), 413
        limit = app.config["MAX_CONTENT_LENGTH"]
        return jsonify(error=f"request too large: the limit is {limit / 1024 / 1024:g} MB"), 413

    @app.errorhandler(HTTPException)
    def http_error(error: HTTPException):
        return jsonify(error=error.description), error.code

    @app.errorhandler(Exception)
    def internal_error(error: Exception):
        logger.exception("unhandled error on %s %s", request.method, request.path)
        return jsonify(error="internal server error"), 500
