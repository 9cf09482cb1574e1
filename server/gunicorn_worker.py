"""gunicorn's threaded worker, changed so that a busy worker leaves new connections to an idle one, and so that a
new connection waits for its first bytes in the event loop rather than in one of the few threads.

The stock ``gthread`` worker accepts every connection it can (up to ``worker_connections``, 1000), busy or not
(gunicorn issue #3433). All workers wait on one listening socket and whichever wakes first takes what is there:
when keep-alive clients connect at once, one worker often took all 32 connections of the benchmark while the
other sat idle, halving throughput and doubling latency (measured: about 400 instead of 1000 req/s in half the
runs). This worker, while all its threads have requests, waits ``ACCEPT_DEFER_SECONDS`` before it takes a waiting
connection, so a worker with a free thread gets it first. It still takes it after that wait: refusing outright
would starve new clients whenever every worker is busy.

The stock worker also gives each new connection a thread at once, which then waits up to 5 s for a request: a
browser's speculative connections that never send one would block a worker of two threads. Here new connections
wait in the event loop (as gunicorn's own deferred ones do) and take a thread when their request arrives.
"""

from __future__ import annotations

import selectors
import time
from functools import partial

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

ACCEPT_DEFER_SECONDS = 0.001


class BalancedThreadWorker(ThreadWorker):
    """``gthread`` that lets idle workers take new connections before it does when its threads are all busy."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._deferred_at: float | None = None  # when, busy, this worker last passed on a waiting connection

    def requests_in_progress(self) -> int:
        """Connections being served, queued for a thread or new and about to send their first request (not those
        idle between keep-alive requests)."""
        return self.nr_conns - len(self.keepalived_conns)

    def accept(self, listener) -> None:
        if self.requests_in_progress() >= self.cfg.threads:
            # Busy: stop listening for a moment; set_accept_enabled takes the connection if it is still there then.
            self._deferred_at = time.monotonic()
            super().set_accept_enabled(False)
            return
        super().accept(listener)

    def enqueue_req(self, conn) -> None:
        if not conn.initialized and not conn.data_ready:
            # A new connection: wait for its request in the event loop; on_pending_socket_readable sets data_ready
            # and comes back here. Silent ones are closed after the stock worker's wait for a first request.
            conn.timeout = time.monotonic() + DEFAULT_WORKER_DATA_TIMEOUT
            self.pending_conns.append(conn)
            self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
            return
        super().enqueue_req(conn)

    def set_accept_enabled(self, enabled: bool) -> None:
        # The event loop calls this after every event while accepting is off and it is under worker_connections.
        if enabled and self._deferred_at is not None:
            if time.monotonic() - self._deferred_at < ACCEPT_DEFER_SECONDS:
                enabled = False
            else:
                self._deferred_at = None
                for listener in self.sockets:
                    super().accept(listener)  # nobody idle took it: take it now (non-blocking; gone is fine)
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Wake when a deferral ends even if nothing else happens: otherwise this worker could stay deaf to new
        # connections for the loop's whole 1 s timeout while a busy one takes them all.
        if self._deferred_at is not None:
            timeout = min(timeout, max(0.0, self._deferred_at + ACCEPT_DEFER_SECONDS - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)
