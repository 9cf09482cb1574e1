"""Prometheus metrics of one app: request counts, latency, predicted images and the model version served.

Each app has its own registry (no module-level state), so tests can build many apps. Run gunicorn with one worker
(see gunicorn.conf.py) so one scrape sees the whole server.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """The collectors the app updates; ``registry`` is what /metrics exposes."""

    def __init__(self, model_version: Callable[[], float]):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "mnist_http_requests",
            "HTTP requests answered, by route, method and status code.",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mnist_http_request_duration_seconds",
            "Time from receiving a request to returning its response, by route.",
            ["endpoint"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.images = Counter(
            "mnist_predicted_images", "Images classified by the model.", ["api"], registry=self.registry
        )
        self.model_version = Gauge(
            "mnist_model_version", "Published version of the model being served (0 before any).", registry=self.registry
        )
        self.model_version.set_function(model_version)
