"""gunicorn settings for the model server: ``gunicorn -c server/gunicorn.conf.py "server:create_app()"``.

gunicorn's own ``gthread`` worker, every setting from the environment with a default that suits a small pod:

    PORT=8080  WEB_CONCURRENCY=2 (worker processes)  GUNICORN_THREADS=4 (threads per worker)
    GUNICORN_TIMEOUT=30  GUNICORN_KEEPALIVE=5  GUNICORN_ACCESSLOG (e.g. "-"; off)  GUNICORN_LOGLEVEL=info

A second process is what lets Python use a second core; inside a worker, one thread runs Python while the others are
in C (the model call, image decoding, socket I/O), which release the GIL. For more load, add pods (the
HorizontalPodAutoscaler in deploy/), not workers.
"""

import logging
import os
import shutil
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "gthread"
threads = int(os.environ.get("GUNICORN_THREADS", "4"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))  # a worker silent this long is restarted
keepalive = int(os.environ.get("GUNICORN_KEEPALIVE", "5"))  # seconds an idle keep-alive connection stays open
graceful_timeout = 20
# Creating the app imports Flask, numpy and Pillow (~0.5 s): once in the master, before the fork, instead of in every
# worker. Nothing before the fork starts a thread or loads the model; each worker loads its own (post_worker_init).
preload_app = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat file off a possibly slow disk
accesslog = os.environ.get("GUNICORN_ACCESSLOG")  # off by default: Prometheus counts the requests
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")

# With several workers, /metrics must add up all of them: prometheus_client reads this variable when it is first
# imported, which is after this file runs (the app is loaded later), so setting it here is early enough.
_own_metrics_dir = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="mnist-metrics-", dir=worker_tmp_dir)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def post_worker_init(worker):
    """Start loading the model as soon as the worker exists, so /readyz turns 200 without waiting for traffic."""
    server_logger = logging.getLogger("server")  # the app's own messages (model loaded, load failed) in gunicorn's log
    server_logger.handlers = worker.log.error_log.handlers
    server_logger.setLevel(logging.INFO)
    server_logger.propagate = False
    store = getattr(worker.wsgi, "extensions", {}).get("mnist_model_store")
    if store is not None:
        store.start()


def child_exit(server, worker):
    """Drop a dead worker's live gauges (the model version) from the shared metrics."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    if _own_metrics_dir:
        shutil.rmtree(_own_metrics_dir, ignore_errors=True)
