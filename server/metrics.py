"""Prometheus metrics of one app: request counts, latency, predicted images and the model version served.

Each app has its own registry (no module-level state), so tests can build many apps. Under gunicorn with several
workers, gunicorn.conf.py sets PROMETHEUS_MULTIPROC_DIR before anything imports prometheus_client; each worker then
writes its values to files there and any worker's /metrics reports the sum over all of them.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
MULTIPROCESS_ENV = "PROMETHEUS_MULTIPROC_DIR"


class Metrics:
    """The collectors the app updates, and ``exposition()`` for /metrics."""

    def __init__(self):
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
        self.model_loads = Counter(
            "mnist_model_loads", "Published versions loaded (ok) or refused (error).", ["outcome"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "mnist_model_version",
            "Published version of the model being served (0 before any).",
            registry=self.registry,
            multiprocess_mode="livemax",  # with several workers: the newest version any live worker serves
        )
        self.model_version.set(0)

    def exposition(self) -> bytes:
        """The Prometheus text format: this process's metrics, or all workers' when running multiprocess."""
        if os.environ.get(MULTIPROCESS_ENV):
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        return generate_latest(self.registry)
