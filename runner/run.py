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
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from aggregator.coordinator import Coordinator, round_line
from aggregator.privacy import epsilon_after, last_round_within_budget
from aggregator.record import missing_count
from common.layout import RunLayout, model_version_dir
from common.runconfig import RunConfig, save_config
from publisher.publish import publish
from runner.pool import evaluate_in_pool, initialize_in_pool, make_progress_queue, make_worker_pool, serve_in_pool
from splitter.split import write_shards


class TrainerDied(RuntimeError):
    """A trainer process ended without finishing (killed, out of memory)."""


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


class RunProcesses:
    """The run's long-lived processes: one per trainer, each its own, so one that dies takes no other with it
    (as one pod per trainer on Kubernetes), and one for the initial model and the rounds' accuracy tests."""

    def __init__(self, parallelism: int, progress_queue) -> None:
        self.parallelism, self.progress_queue = parallelism, progress_queue
        self.helper = None  # started on first use: a resumed run with nothing left to do starts no process
        self.trainers: dict[int, tuple] = {}  # trainer -> (its executor, its serve task)

    def new_process(self):
        return make_worker_pool(self.parallelism, self.progress_queue, processes=1)

    def run(self, what: str, function, *arguments):
        """Run one task in the helper process and return its result."""
        if self.helper is None:
            self.helper = self.new_process()
        try:
            return self.helper.submit(function, *arguments).result()
        except BrokenProcessPool:
            self.helper.shutdown(wait=True, kill_workers=True)
            self.helper = None
            raise TrainerDied(f"the process running {what} died; finished work is kept, run the same command again to resume") from None

    def start_trainers(self, layout: RunLayout, trainers: int) -> None:
        """Start ``trainers`` long-lived trainers on the run (trainer/serve.py); they wait for each round's files."""
        self.layout, self.count = layout, trainers
        for trainer in range(trainers):
            self.start_trainer(trainer)

    def start_trainer(self, trainer: int) -> None:
        executor = self.new_process()
        task = executor.submit(serve_in_pool, str(self.layout.volume), self.layout.run_id, trainer, self.count)
        self.trainers[trainer] = (executor, task)

    def watch(self, restart_dead: bool) -> None:
        """Raise a trainer's error; start again a trainer whose process died, or raise TrainerDied if not ``restart_dead``."""
        for trainer, (executor, task) in list(self.trainers.items()):
            if not task.done() or task.exception() is None:
                continue
            if not isinstance(task.exception(), BrokenProcessPool):
                raise task.exception()
            executor.shutdown(wait=True, kill_workers=True)
            if not restart_dead:
                raise TrainerDied(
                    f"a trainer process died (trainer {trainer}); finished work is kept, run the same command again to resume"
                )
            # It picks up from the files: the client it was training counts one attempt (common/rounds.py), so a
            # client that kills its process every time is left out after CLIENT_ATTEMPTS, blamed on no other.
            self.start_trainer(trainer)

    def close(self) -> None:
        """Stop every process now: after an interrupt, a half-trained client is redone on resume anyway."""
        executors = [executor for executor, _ in self.trainers.values()] + ([self.helper] if self.helper else [])
        for executor in executors:
            # One call that kills and waits: loky's exit handler would otherwise wait forever on an executor
            # whose shutdown began without waiting (seen on Ctrl-C).
            executor.shutdown(wait=True, kill_workers=True)


def train_rounds(
    layout: RunLayout, config: RunConfig, data: Path, processes: RunProcesses, live: LiveProgress, on_round
) -> list[dict]:
    """The run's rounds (from the first unfinished one): its long-lived trainers and the coordinator, which calls
    ``on_round(metrics)`` after each; returns every round's metrics."""
    coordinator = Coordinator(
        layout,
        evaluate=lambda model_path: processes.run(
            f"the accuracy test of {model_path.parent.name}", evaluate_in_pool, str(model_path), str(data)
        ),
        watch=lambda: processes.watch(restart_dead=config.min_clients is not None),
        on_round_start=live.start_round,
    )
    if not layout.metrics_path(last_round_within_budget(config)).is_file():
        processes.start_trainers(layout, processes.parallelism)
    return coordinator.run(config, on_round=on_round)


def run_pipeline(config: RunConfig, run_id: str, options: RunOptions, console: Console) -> dict:
    """The whole local pipeline; returns a summary. Steps whose outputs exist are skipped (resume).

    The same coordinator and long-lived trainers as on Kubernetes (aggregator/coordinator.py, trainer/serve.py),
    meeting on the run's directory through the same files; here they are processes of this command.
    """
    started = time.monotonic()
    layout = RunLayout(options.volume, run_id)
    last_round = last_round_within_budget(config)  # known before training: epsilon depends on z, K, N, r, delta
    console.print(f"[bold]run[/bold] {run_id} in {layout.run_dir}")
    progress_queue = make_progress_queue()
    processes = RunProcesses(min(options.parallelism, config.clients_each_round), progress_queue)
    history = []
    try:
        save_config(layout.config_path, config)  # a resumed run must have the same configuration
        if not layout.global_model_path(0).is_file():
            processes.run("the initial model", initialize_in_pool, str(options.volume), run_id, config)
        write_shards(layout, options.data, config.workers, config.split, config.alpha, config.seed)
        remove_abandoned_temporaries(layout)
        layout.stop_path.unlink(missing_ok=True)  # running the command again is the user's word to go on
        with LiveProgress(console, config, progress_queue) as live:

            def round_done(metrics: dict) -> None:
                live.finish_round(metrics["round"])
                console.print(round_line(metrics, config.rounds), markup=False)
                history.append({
                    "round": metrics["round"], "accuracy": metrics["accuracy"], "loss": metrics["loss"],
                    "seconds": sum(metrics.get("seconds", {}).values()), "clients": metrics.get("clients"),
                    "missing": metrics.get("missing", []), "privacy": metrics.get("privacy"),
                })

            train_rounds(layout, config, options.data, processes, live, round_done)
    finally:
        processes.close()
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
