"""Real faults for the partial-round benchmark and its end-to-end test: ``kill -9`` of the process that trains a
given client, found by the TensorBoard file it holds open under ``logs/round-K/worker-W/`` (no hook in the code)."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from pathlib import Path

from common.layout import RunLayout


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = {int(child) for child in (task / "children").read_text().split()}
            except OSError:
                continue
            pending.extend(children - found)
            found |= children
    return found


def processes_with_files_under(pids: set[int], directory: Path) -> list[int]:
    """Those of ``pids`` that hold a file under ``directory`` open."""
    prefix = str(directory.resolve()) + os.sep
    holders = []
    for pid in pids:
        try:
            targets = [os.readlink(entry) for entry in Path(f"/proc/{pid}/fd").iterdir()]
        except OSError:
            continue
        if any(target.startswith(prefix) for target in targets):
            holders.append(pid)
    return holders


class TrainerKiller:
    """Kills, on every attempt, the trainer process of each (round, worker) in ``plan`` while the runner runs."""

    def __init__(self, runner: subprocess.Popen, layout: RunLayout, plan: dict[int, int]) -> None:
        self.runner, self.layout, self.plan = runner, layout, plan
        self.kills: list[tuple[int, int, int]] = []  # (round, worker, pid)
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.watch, daemon=True)

    def __enter__(self) -> TrainerKiller:
        self.thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self.stopping.set()
        self.thread.join(timeout=5)

    def watch(self) -> None:
        while not self.stopping.is_set() and self.runner.poll() is None:
            for round_number, worker in self.plan.items():
                log_dir = self.layout.tensorboard_dir(round_number, worker)
                if self.layout.metrics_path(round_number).exists() or not log_dir.is_dir():
                    continue
                killed = {pid for _, _, pid in self.kills}  # a killed process lingers a moment: once is enough
                for pid in processes_with_files_under(descendants(self.runner.pid) - killed, log_dir):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.kills.append((round_number, worker, pid))
            time.sleep(0.02)
