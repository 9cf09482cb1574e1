"""gunicorn's threaded worker, changed so that new connections go to the worker with the fewest, a busy worker
leaves them to an idle one, and a new connection waits for its first bytes in the event loop rather than in one of
the few threads.

The stock ``gthread`` worker accepts every connection it can (up to ``worker_connections``, 1000), busy or not
(gunicorn issue #3433). All workers wait on one listening socket and whichever wakes first takes what is there:
when keep-alive clients connect at once, one worker often took all 32 connections of the benchmark while the
other sat idle, halving throughput and doubling latency (measured: about 400 instead of 1000 req/s in half the
runs). Here a worker passes on a waiting connection for a moment when all its threads have requests, or when
another worker holds fewer connections (least-connections, as HAProxy's ``leastconn`` does for long-lived ones):
a keep-alive connection stays with the worker that took it, so a 20/12 split at connect time keeps the first
worker's clients waiting ~60 % longer for as long as they stay (measured: p99 67 ms at 20/12, 52 at 16/16). It
still takes the connection after that moment: refusing outright would starve new clients when all are busy.

When the process may run on exactly as many CPUs as there are workers (this 2-core machine; a Kubernetes pod with
whole CPUs under the static CPU manager), each worker keeps to one of them: its caches stay warm and the two
workers stop trading places. Measured at 32 clients, six interleaved rounds: p99 47 ms pinned against 52 ms not.
With more CPUs than workers (a pod on a big node that may use all of them) nothing is pinned: the scheduler's
choice is better there. ``GUNICORN_PIN_WORKERS=0`` turns it off.

The stock worker also gives each new connection a thread at once, which then waits up to 5 s for a request: a
browser's speculative connections that never send one would block a worker of two threads. Here new connections
wait in the event loop (as gunicorn's own deferred ones do) and take a thread when their request arrives.
"""

from __future__ import annotations

import mmap
import os
import selectors
import time
from functools import partial

from gunicorn.workers.gthread import DEFAULT_WORKER_DATA_TIMEOUT, ThreadWorker

ACCEPT_DEFER_SECONDS = 0.001  # how long a busy worker waits for an idle one to take a new connection
# ... and one with more connections than another worker. Longer, because the other worker's event loop may be
# waiting for the GIL behind a request thread, which holds it for up to 5 ms (sys.getswitchinterval()).
LEAST_CONNECTIONS_DEFER_SECONDS = 0.005
PIN_WORKERS_ENV = "GUNICORN_PIN_WORKERS"  # "0" (or false/no/off) leaves every worker to the scheduler


def cpu_for_worker(slot: int, allowed_cpus: set[int], workers: int) -> int | None:
    """The one CPU the worker in ``slot`` keeps to, or None to leave it to the scheduler: only when there are as
    many CPUs as workers, so that no CPU is left out and none gets two workers."""
    if workers < 2 or len(allowed_cpus) != workers:
        return None
    return sorted(allowed_cpus)[slot % workers]


class ConnectionBoard:
    """Open connections per worker, in memory the gunicorn master shares with every worker it forks.

    A slot is a pair of int64: the worker's pid (0 = free, -1 = reserved by the master for a worker being forked)
    and its open connections, or DRAINING once it stops taking new ones (a reload, a shutdown). Only a slot's own
    worker writes its count; readers may see a count one update old, which costs at most one deferral."""

    SLOTS = 256  # workers alive at once, counting those of a graceful reload
    FREE, RESERVED = 0, -1
    DRAINING = -1  # as a count: this worker takes no new connections, so it is nobody's reason to wait

    def __init__(self):
        self._memory = mmap.mmap(-1, self.SLOTS * 2 * 8)  # anonymous and MAP_SHARED: forked workers see one board
        self._cells = memoryview(self._memory).cast("q")

    def reserve(self) -> int | None:
        """In the master, before a fork: a free slot for the new worker (or a dead worker's), or None if full."""
        for slot in range(self.SLOTS):
            pid = self._cells[2 * slot]
            if pid == self.FREE or (pid > 0 and not _process_alive(pid)):
                self._cells[2 * slot], self._cells[2 * slot + 1] = self.RESERVED, 0
                return slot
        return None

    def claim(self, slot: int, pid: int) -> None:
        self._cells[2 * slot + 1] = 0
        self._cells[2 * slot] = pid

    def release(self, slot: int) -> None:
        self._cells[2 * slot + 1] = 0
        self._cells[2 * slot] = self.FREE

    def publish(self, slot: int, connections: int) -> None:
        self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The fewest open connections of any other live worker, or None when there is no other."""
        fewest = None
        for other in range(self.SLOTS):
            pid = self._cells[2 * other]
            if other != slot and pid > 0:
                connections = self._cells[2 * other + 1]
                if connections == self.DRAINING:
                    continue
                if (fewest is None or connections < fewest) and _process_alive(pid):
                    fewest = connections
        return fewest


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class BalancedThreadWorker(ThreadWorker):
    """``gthread`` that gives new connections to the worker with the fewest, and to idle workers before busy ones."""

    board: ConnectionBoard | None = None  # made in the master by the first worker object, inherited by every fork

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)  # runs in the master, before the fork
        if BalancedThreadWorker.board is None:
            BalancedThreadWorker.board = ConnectionBoard()
        self.slot = BalancedThreadWorker.board.reserve()
        self._published = 0
        self._deferred_at: float | None = None  # when this worker last passed on a waiting connection
        self._defer_for = ACCEPT_DEFER_SECONDS

    def init_process(self) -> None:
        # In the new worker, before post_worker_init starts the model thread, so that thread is pinned too.
        if self.slot is not None:
            self.board.claim(self.slot, os.getpid())
            self.pin_to_cpu()
        super().init_process()

    def pin_to_cpu(self) -> None:
        if os.environ.get(PIN_WORKERS_ENV, "").strip().lower() in ("0", "false", "no", "off"):
            return
        if not hasattr(os, "sched_setaffinity"):  # not Linux
            return
        cpu = cpu_for_worker(self.slot, os.sched_getaffinity(0), self.cfg.workers)
        if cpu is not None:
            os.sched_setaffinity(0, {cpu})
            self.log.info("worker %s keeps to CPU %s", os.getpid(), cpu)

    def run(self) -> None:
        try:
            super().run()
        finally:
            if self.slot is not None:
                self.board.release(self.slot)

    def requests_in_progress(self) -> int:
        """Connections being served, queued for a thread or new and about to send their first request (not those
        idle between keep-alive requests)."""
        return self.nr_conns - len(self.keepalived_conns)

    def others_hold_fewer_connections(self) -> bool:
        if self.slot is None:
            return False
        fewest = self.board.fewest_elsewhere(self.slot)
        return fewest is not None and fewest < self.nr_conns

    def accept(self, listener) -> None:
        if self.others_hold_fewer_connections():
            self._defer_accepting(LEAST_CONNECTIONS_DEFER_SECONDS)
        elif self.requests_in_progress() >= self.cfg.threads:
            self._defer_accepting(ACCEPT_DEFER_SECONDS)
        else:
            super().accept(listener)

    def _defer_accepting(self, seconds: float) -> None:
        # Stop listening for a moment; set_accept_enabled takes the connection if it is still there then.
        self._deferred_at = time.monotonic()
        self._defer_for = seconds
        super().set_accept_enabled(False)

    def publish_connections(self) -> None:
        connections = self.nr_conns if self.alive else ConnectionBoard.DRAINING
        if self.slot is not None and connections != self._published:
            self.board.publish(self.slot, connections)
            self._published = connections

    def handle_exit(self, sig, frame) -> None:
        super().handle_exit(sig, frame)  # stops accepting; the old workers of a reload drain like this
        self.publish_connections()

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
            if time.monotonic() - self._deferred_at < self._defer_for:
                enabled = False
            else:
                self._deferred_at = None
                for listener in self.sockets:
                    super().accept(listener)  # nobody else took it: take it now (non-blocking; gone is fine)
        super().set_accept_enabled(enabled)

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        # Only the event loop's thread opens and closes connections, and every pass of the loop comes here before
        # it waits: publishing here keeps the board current to within one pass, which takes microseconds.
        self.publish_connections()
        # Wake when a deferral ends even if nothing else happens: otherwise this worker could stay deaf to new
        # connections for the loop's whole 1 s timeout while a busy one takes them all.
        if self._deferred_at is not None:
            timeout = min(timeout, max(0.0, self._deferred_at + self._defer_for - time.monotonic()))
        super().wait_for_and_dispatch_events(timeout)
