"""Run the federated pipeline locally: init -> split -> rounds of (train xN -> FedAvg -> evaluate) -> publish.

Every step's output is written atomically where the cluster would write it, and a step whose output
already exists (and is valid) is skipped: re-running an interrupted run finishes it without redoing work.
"""

from __future__ import annotations

import hashlib
import json
import queue
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator.aggregate import aggregate_round
from aggregator.privacy import epsilon_after, last_round_within_budget
from aggregator.record import missing_count, round_facts
from common.atomic import read_json, write_json
from common.layout import RunLayout, model_version_dir
from common.modelfile import read_file_metadata, sha256_of_file
from common.runconfig import RunConfig, save_config
from common.sampling import clients_for_round
from publisher.publish import publish
from runner.pool import evaluate_in_pool, initialize_in_pool, make_progress_queue, make_worker_pool, train_in_pool
from splitter.split import write_shards


class TrainerDied(RuntimeError):
    """A trainer process ended without finishing (killed, out of memory)."""


# With partial rounds, how often a client is tried in one go of the runner before it counts as missing.
TRAINER_ATTEMPTS = 2
TRAINER_PROCESS_DIED = "its trainer process died (killed, or out of memory)"


@dataclass(frozen=True)
class RunOptions:
    """How to run (not what is computed): these may change between a run and its resumption."""

    volume: Path
    data: Path
    parallelism: int
    min_accuracy: float | None = None


def default_run_id(config: RunConfig) -> str:
    """A readable run id that is the same for the same configuration, so re-running a command resumes it."""
    # Every setting counts, defaults included: after a default changes, the same command starts a new run
    # instead of resuming one made under the old default.
    digest = hashlib.sha256(json.dumps(config.to_dict(), sort_keys=True).encode()).hexdigest()[:8]
    return f"{config.split}-w{config.workers}-r{config.rounds}-e{config.epochs}-s{config.seed}-{digest}"


def client_is_done(layout: RunLayout, round_number: int, worker: int, start_sha256: str) -> bool:
    """True if this client's model exists, is readable, and was trained from this round's starting model."""
    path = layout.client_model_path(round_number, worker)
    if not path.is_file():
        return False
    try:
        metadata = read_file_metadata(path)
    except ValueError:
        return False
    return (
        metadata.get("run_id") == layout.run_id
        and metadata.get("round") == round_number
        and metadata.get("global_sha256") == start_sha256
    )


def remove_abandoned_temporaries(layout: RunLayout) -> None:
    """Delete half-written temporary files that a killed step left behind (finished files are never temporary)."""
    for temporary in layout.run_dir.rglob(".*.tmp*"):
        temporary.unlink(missing_ok=True)


# More bars than fit a terminal cost the runner CPU the trainers need (rich redraws every bar ten times a
# second: measured 43 ms per redraw for 100 bars, 520 ms for 1000); beyond this, one bar counts clients.
MAX_WORKER_BARS = 8


class LiveProgress:
    """Rich progress bars: rounds, then each worker's batches (or, for many workers, clients done this round)."""

    def __init__(self, console: Console, config: RunConfig, progress_queue) -> None:
        self.progress = Progress(
            TextColumn("{task.description:<12}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=console,
        )
        self.rounds_task = self.progress.add_task("rounds", total=config.rounds)
        self.per_worker = config.workers <= MAX_WORKER_BARS
        if self.per_worker:
            self.worker_tasks = [
                self.progress.add_task(f"worker {worker}", total=None) for worker in range(config.workers)
            ]
        else:
            self.clients_task = self.progress.add_task("clients", total=config.workers)
        self.workers = config.workers
        self.queue = progress_queue
        self.stopping = threading.Event()
        self.listener = threading.Thread(target=self.listen, daemon=True)

    def __enter__(self) -> LiveProgress:
        self.progress.start()
        self.listener.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.listener.join(timeout=2)
        self.progress.stop()

    def listen(self) -> None:
        while not self.stopping.is_set():
            try:
                worker, done, total = self.queue.get(timeout=0.2)
            except queue.Empty:
                continue
            except (EOFError, OSError):
                return
            if self.per_worker:
                self.progress.update(self.worker_tasks[worker], completed=done, total=total)
            elif done == total:  # each client reports its last batch exactly once
                self.progress.advance(self.clients_task)

    def start_round(self, round_number: int, clients: list[int], pending_workers: list[int]) -> None:
        """A round of ``clients`` (the sampled workers) of which ``pending_workers`` still have to train."""
        self.progress.update(self.rounds_task, description=f"round {round_number}")
        if not self.per_worker:
            self.progress.update(self.clients_task, total=len(clients), completed=len(clients) - len(pending_workers))
            return
        pending = set(pending_workers)
        for worker, task in enumerate(self.worker_tasks):
            done = worker not in pending  # trained already, or not sampled this round
            self.progress.update(task, completed=1 if done else 0, total=1 if done else None)

    def finish_round(self, round_number: int) -> None:
        self.progress.update(self.rounds_task, completed=round_number)


def pool_results(futures: list, what: str) -> list:
    """The futures' results in order; raise TrainerDied if a worker process died meanwhile."""
    wait(futures, return_when=FIRST_EXCEPTION)
    try:
        return [future.result() for future in futures]
    except BrokenProcessPool:
        raise TrainerDied(
            f"a trainer process died during {what}; finished work is kept, run the same command again to resume"
        ) from None


def train_round(pool, layout: RunLayout, config: RunConfig, round_number: int, workers: list[int]) -> list[dict]:
    """Train the given workers of a round in the pool; raise TrainerDied if a trainer process dies."""
    futures = [
        pool.submit(
            train_in_pool, str(layout.volume), layout.run_id, round_number, worker,
            config.epochs, config.batch_size, config.seed,
        )
        for worker in workers
    ]
    return pool_results(futures, f"round {round_number}")


class WorkerPool:
    """Starts the worker processes on first use only, so a resumed run with nothing left to do starts none."""

    def __init__(self, parallelism: int, progress_queue) -> None:
        self.parallelism = parallelism
        self.progress_queue = progress_queue
        self.pool = None

    def get(self):
        if self.pool is None:
            self.pool = make_worker_pool(self.parallelism, self.progress_queue)
        return self.pool

    def run(self, what: str, function, *arguments):
        """Run one task in a worker process and return its result."""
        return pool_results([self.get().submit(function, *arguments)], what)[0]

    def restart(self) -> None:
        """Replace a pool that lost a process: the next task starts fresh workers."""
        self.close()
        self.pool = None

    def close(self) -> None:
        """Stop the workers now: after an interrupt, a half-trained client is redone on resume anyway."""
        if self.pool is not None:
            self.pool.shutdown(wait=True, kill_workers=True)


def one_line(error: BaseException) -> str:
    """An exception as one line: its type and the first line of its message."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


def train_allowing_failures(
    workers: WorkerPool, layout: RunLayout, config: RunConfig, round_number: int, pending: list[int], start_sha256: str
) -> dict[int, str]:
    """Train ``pending`` clients, retrying each failed one alone (so a dying process is blamed on the client that
    killed it); returns why each client that failed every attempt failed."""
    arguments = (str(layout.volume), layout.run_id, round_number)
    settings = (config.epochs, config.batch_size, config.seed)
    futures = {worker: workers.get().submit(train_in_pool, *arguments, worker, *settings) for worker in pending}
    wait(list(futures.values()))
    failures: dict[int, str] = {}
    for worker, future in futures.items():
        try:
            future.result()
        except BrokenProcessPool:
            failures[worker] = TRAINER_PROCESS_DIED
        except Exception as error:  # the client's own failure (a corrupt shard, ...), not the runner's
            failures[worker] = one_line(error)
    if any(isinstance(future.exception(), BrokenProcessPool) for future in futures.values()):
        workers.restart()
    for _ in range(1, TRAINER_ATTEMPTS):
        for worker in sorted(failures):
            if client_is_done(layout, round_number, worker, start_sha256):  # finished as a sibling broke the pool
                del failures[worker]
                continue
            try:
                workers.run(f"worker {worker} of round {round_number}", train_in_pool, *arguments, worker, *settings)
                del failures[worker]
            except TrainerDied:
                workers.restart()
                failures[worker] = TRAINER_PROCESS_DIED
            except Exception as error:
                failures[worker] = one_line(error)
    return failures


def complete_round(
    layout: RunLayout, config: RunConfig, round_number: int, data: Path, workers: WorkerPool, live: LiveProgress
) -> dict:
    """Train, aggregate and evaluate one round, skipping whatever an earlier attempt finished; returns its metrics."""
    seconds = {"train": 0.0, "aggregate": 0.0, "evaluate": 0.0}
    if not layout.global_model_path(round_number).is_file():
        started = time.monotonic()
        start_sha256 = sha256_of_file(layout.global_model_path(round_number - 1))
        clients = clients_for_round(layout, config, round_number)  # recorded once: a resume trains the same ones
        pending = [worker for worker in clients if not client_is_done(layout, round_number, worker, start_sha256)]
        live.start_round(round_number, clients, pending)
        if pending and config.min_clients is None:
            train_round(workers.get(), layout, config, round_number, pending)
        elif pending:
            failures = train_allowing_failures(workers, layout, config, round_number, pending, start_sha256)
            for worker, reason in failures.items():
                write_json(layout.client_failure_path(round_number, worker),
                           {"worker": worker, "round": round_number, "reason": f"failed {TRAINER_ATTEMPTS} times: {reason}"})
        seconds["train"] = time.monotonic() - started
        started = time.monotonic()
        aggregate_round(layout, round_number, config.workers)
        seconds["aggregate"] = time.monotonic() - started
    elif config.dp_clip is not None:
        # Resumed after a crash between the global model and the deletion of the raw updates: finish that.
        aggregate_round(layout, round_number, config.workers)
    started = time.monotonic()
    model_path = layout.global_model_path(round_number)
    metrics = workers.run(f"the accuracy test of round {round_number}", evaluate_in_pool, str(model_path), str(data))
    seconds["evaluate"] = time.monotonic() - started
    metrics = {**metrics, **round_facts(layout, round_number), "round": round_number, "seconds": seconds}
    write_json(layout.metrics_path(round_number), metrics)
    return metrics


def run_pipeline(config: RunConfig, run_id: str, options: RunOptions, console: Console) -> dict:
    """The whole local pipeline; returns a summary. Steps whose outputs exist are skipped (resume)."""
    started = time.monotonic()
    layout = RunLayout(options.volume, run_id)
    last_round = last_round_within_budget(config)  # known before training: epsilon depends on z, K, N, r, delta
    console.print(f"[bold]run[/bold] {run_id} in {layout.run_dir}")
    progress_queue = make_progress_queue()
    workers = WorkerPool(min(options.parallelism, config.workers), progress_queue)
    history = []
    try:
        save_config(layout.config_path, config)  # a resumed run must have the same configuration
        if not layout.global_model_path(0).is_file():
            workers.run("the initial model", initialize_in_pool, str(options.volume), run_id, config)
        write_shards(layout, options.data, config.workers, config.split, config.alpha, config.seed)
        remove_abandoned_temporaries(layout)
        with LiveProgress(console, config, progress_queue) as live:
            for round_number in range(1, last_round + 1):
                done_before = layout.metrics_path(round_number).is_file()
                if done_before:
                    metrics = read_json(layout.metrics_path(round_number))
                else:
                    metrics = complete_round(layout, config, round_number, options.data, workers, live)
                phases = metrics.get("seconds", {})
                history.append({
                    "round": round_number, "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                    "seconds": sum(phases.values()), "clients": metrics.get("clients"),
                    "missing": metrics.get("missing", []), "privacy": metrics.get("privacy"),
                })
                live.finish_round(round_number)
                timing = ", ".join(f"{name} {value:.1f} s" for name, value in phases.items())
                console.print(
                    f"round {round_number}/{config.rounds}: test accuracy {metrics['accuracy']:.4f}, "
                    f"loss {metrics['loss']:.4f} ({timing}){' (done before)' if done_before else ''}"
                )
                missing = metrics.get("missing", [])
                if isinstance(missing, int):  # under DP the public facts count the missing, never name them
                    if missing:
                        console.print(f"  went on without {missing} of its sampled clients", markup=False)
                else:
                    for entry in missing:
                        console.print(f"  went on without worker {entry['worker']}: {entry['reason']}", markup=False)
    finally:
        workers.close()
    if last_round < config.rounds:
        console.print(budget_stop_line(config, last_round), markup=False)
    version, is_new = publish(layout, last_round, options.min_accuracy)
    return {
        "run_id": run_id,
        "history": history,
        "accuracy": history[-1]["accuracy"],
        "seconds": time.monotonic() - started,
        "version": version,
        "newly_published": is_new,
        "model_dir": model_version_dir(options.volume, version),
    }


def budget_stop_line(config: RunConfig, last_round: int) -> str:
    """The line that says the epsilon budget stopped the run, and where."""
    return (
        f"dp-epsilon-budget {config.dp_epsilon_budget:g} stopped the run at round {last_round} of {config.rounds}: "
        f"epsilon {epsilon_after(config, last_round):.3g}, round {last_round + 1} would reach "
        f"{epsilon_after(config, last_round + 1):.3g} at delta {config.dp_delta:.3g}"
    )


def print_summary(console: Console, summary: dict) -> None:
    """A table of accuracy per round, then the wall time and where the model is."""
    table = Table(title=f"run {summary['run_id']}")
    table.add_column("round", justify="right")
    table.add_column("test accuracy", justify="right")
    table.add_column("test loss", justify="right")
    table.add_column("seconds", justify="right")
    history = summary["history"]
    partial = any(missing_count(row.get("missing", [])) for row in history)
    private = any(row.get("privacy") for row in history)
    if partial:
        table.add_column("clients (missing)", justify="right")
    if private:
        table.add_column("clip", justify="right")
        table.add_column("epsilon", justify="right")
    for row in history:
        cells = [str(row["round"]), f"{row['accuracy']:.4f}", f"{row['loss']:.4f}", f"{row['seconds']:.1f}"]
        if partial:
            missing = row.get("missing", [])
            if isinstance(missing, int):
                named = f" ({missing} missing)" if missing else ""
            else:
                named = f" ({', '.join(str(entry['worker']) for entry in missing)})" if missing else ""
            cells.append(f"{row.get('clients')}{named}")
        if private:
            privacy = row.get("privacy") or {}
            epsilon = privacy.get("epsilon")
            cells += [f"{privacy.get('clip', float('nan')):.3g}", "inf" if epsilon is None else f"{epsilon:.3g}"]
        table.add_row(*cells)
    console.print(table)
    last_privacy = history[-1].get("privacy") if history else None
    if last_privacy:
        epsilon = last_privacy.get("epsilon")
        spent = "no guarantee (noise multiplier 0)" if epsilon is None else f"epsilon {epsilon:.3g}"
        console.print(f"user-level differential privacy: {spent} at delta {last_privacy['delta']:.3g}")
    state = "published" if summary["newly_published"] else "already published"
    console.print(
        f"final test accuracy [bold]{summary['accuracy']:.4f}[/bold], wall time {summary['seconds']:.1f} s; "
        f"{state} as version {summary['version']}: {summary['model_dir']}"
    )
