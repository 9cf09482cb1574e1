"""gunicorn settings for the model server: ``gunicorn -c server/gunicorn.conf.py "server:create_app()"``.

Two worker processes with two threads each (override with WEB_CONCURRENCY and GUNICORN_THREADS). A second process
is what lets Python use the second core of this 2-core machine; inside a worker, one thread runs Python while the
other is in C (the model call, image decoding, socket I/O), which all release the GIL. More threads only queue for
the GIL in random order: at 32 clients, p99 was 43 ms with 2 threads, 56 with 4 and 70 with 8 (bench/serve_bench.py,
medians of 3 interleaved runs). The worker class (server/gunicorn_worker.py) gives each new connection to the
worker with the fewest, keeps each worker on its own CPU when there are as many CPUs as workers
(GUNICORN_PIN_WORKERS=0 turns that off), and keeps connections without a request out of the threads. Slow uploads
do hold a thread while their body arrives: exposed directly to slow networks (no buffering proxy such as an ingress
in front), raise GUNICORN_THREADS. Each worker loads its own model (~250 MB with TensorFlow, which converts it).
"""

import logging
import os
import shutil
import sys
import tempfile

bind = f"0.0.0.0:{os.environ.get('PORT', '8080')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "server.gunicorn_worker.BalancedThreadWorker"  # gthread with least-connections between workers
threads = int(os.environ.get("GUNICORN_THREADS", "2"))
keepalive = 5  # seconds an idle client connection stays open (keep-alive saves a TCP handshake per request)
timeout = 60  # a worker silent this long is restarted (the first model load takes a few seconds)
graceful_timeout = 20
# Fork-safe: creating the app imports Flask, numpy and Pillow but never TensorFlow (each worker imports it in its
# model thread after the fork; when_ready below checks). Preloading shares those imports between the workers.
preload_app = True
worker_tmp_dir = "/dev/shm" if os.path.isdir("/dev/shm") else None  # heartbeat file off a possibly slow disk
accesslog = os.environ.get("GUNICORN_ACCESSLOG")  # e.g. "-" for stdout; off by default (Prometheus counts requests)
errorlog = "-"
loglevel = os.environ.get("GUNICORN_LOGLEVEL", "info")

# With several workers, /metrics must add up all of them: prometheus_client reads this variable when it is first
# imported, which is after this file runs (the app is loaded later), so setting it here is early enough.
_own_metrics_dir = None
if workers > 1 and not os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
    _own_metrics_dir = tempfile.mkdtemp(prefix="mnist-metrics-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = _own_metrics_dir


def when_ready(server):
    """Refuse to run if TensorFlow was imported before the fork: its thread pools do not survive fork()."""
    if "tensorflow" in sys.modules:
        server.log.error("tensorflow was imported in the gunicorn master (preload_app): workers would hang")
        sys.exit(1)


def post_worker_init(worker):
    """Start loading the model as soon as the worker exists, so /readyz turns 200 without waiting for traffic."""
    server_logger = logging.getLogger("server")  # the app's own messages (model loaded, load failed) in gunicorn's log
    server_logger.handlers = worker.log.error_log.handlers
    server_logger.setLevel(logging.INFO)
    server_logger.propagate = False  # TensorFlow's absl gives the root logger a handler: each line would show twice
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
