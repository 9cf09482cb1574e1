"""What a user's terminal shows: the runner's own lines only, whole when stdout is a pipe or a file, and native log
lines held to TF_CPP_MIN_LOG_LEVEL without hiding an error, a traceback or the last words of a crash."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from common.native_log import is_hidden

REPO_ROOT = Path(__file__).resolve().parents[2]

ONEDNN = b"I0000 00:00:1796601174.643428    2151 port.cc:153] oneDNN custom operations are on. You may see ..."
ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
XNNPACK = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
ABSL_WARNING = b"W0000 00:00:1796601174.643428    2151 cuda_executor.cc:1] a warning"
ABSL_ERROR = b"E0000 00:00:1796601174.643428    2151 cuda_executor.cc:1] an error"
ABSL_FATAL = b"F0000 00:00:1796601174.643428    2151 cpu_feature_guard.cc:1] Check failed: a fatal error"
LITERT_ERROR = b"ERROR: Didn't find op for builtin opcode 'CONV_2D'"
TRACEBACK = b"Traceback (most recent call last):"
PYTHON_WARNING = b"WARNING:tensorflow:5 out of the last 5 calls to <function> triggered tf.function retracing."
# What TensorFlow, absl, oneDNN or LiteRT print, whatever the message.
NATIVE_LINE = re.compile(r"^[IWEF]\d{4} |absl|oneDNN|TensorFlow|tensorflow|XNNPACK|cpu_feature_guard")


@pytest.mark.parametrize(("line", "hidden_from_level"), [
    (ONEDNN, 1), (ABSL_BANNER, 1), (XNNPACK, 1), (ABSL_WARNING, 2), (ABSL_ERROR, 3), (LITERT_ERROR, 3),
    (ABSL_FATAL, None), (TRACEBACK, None), (PYTHON_WARNING, None), (b"", None), (b"runner: error: x", None),
])
def test_a_native_log_line_is_hidden_from_its_level_on_and_any_other_line_never(line, hidden_from_level):
    for level in range(5):
        expected = hidden_from_level is not None and level >= hidden_from_level
        assert is_hidden(line + b"\n", level) == expected, (line, level)


FILTERED_SCRIPT = """
import os, sys
from common.native_log import min_log_level_on_stderr
with min_log_level_on_stderr(int(sys.argv[1])):
    for line in sys.argv[2:]:
        os.write(2, line.encode() + b"\\n")
    print("from python", file=sys.stderr)
    if os.environ.get("END") == "abort":
        os.abort()
    raise RuntimeError("a traceback the user must see")
"""


def run_filtered(level: int, lines: list[bytes], end: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-c", FILTERED_SCRIPT, str(level), *(line.decode() for line in lines)]
    return subprocess.run(command, cwd=REPO_ROOT, env={**os.environ, "END": end, "PYTHONPATH": str(REPO_ROOT)},
                          capture_output=True, timeout=60)


@pytest.mark.parametrize("end", ["traceback", "abort"])
def test_the_filter_hides_the_notices_and_passes_errors_tracebacks_and_a_crash_s_last_line(end):
    lines = [ABSL_BANNER, ONEDNN, XNNPACK, ABSL_WARNING, ABSL_ERROR, ABSL_FATAL]

    finished = run_filtered(2, lines, end)

    shown = finished.stderr.splitlines()
    assert shown[:3] == [ABSL_ERROR, ABSL_FATAL, b"from python"], finished.stderr
    if end == "abort":
        assert finished.returncode < 0 and len(shown) == 3  # the lines written just before the crash still arrive
    else:
        assert shown[3] == TRACEBACK and shown[-1] == b"RuntimeError: a traceback the user must see"
    assert finished.stdout == b""


def test_level_0_shows_every_line():
    finished = run_filtered(0, [ABSL_BANNER, ONEDNN, XNNPACK], "traceback")

    assert finished.stderr.splitlines()[:4] == [ABSL_BANNER, ONEDNN, XNNPACK, b"from python"]


def test_the_runner_shows_only_its_own_whole_lines_when_stdout_is_not_a_terminal(tmp_path, tiny_mnist):
    # As `make run | tee log` does: stdout and stderr pipes, no TF_CPP_MIN_LOG_LEVEL, no COLUMNS.
    env = {name: value for name, value in os.environ.items() if name not in {"TF_CPP_MIN_LOG_LEVEL", "COLUMNS"}}
    volume = tmp_path / "volume"
    command = [sys.executable, "-m", "runner", "--volume", str(volume), "--data", str(tiny_mnist), "--workers", "2",
               "--rounds", "1", "--batch-size", "100", "--run-id", "quiet-output"]

    finished = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=300)

    assert finished.returncode == 0, finished.stderr[-3000:]
    assert finished.stderr == ""  # TensorFlow's, absl's, oneDNN's and LiteRT's start-up lines included
    lines = finished.stdout.splitlines()
    assert not [line for line in lines if NATIVE_LINE.search(line)], finished.stdout
    # A line longer than rich's 80 columns stays one line in a pipe.
    round_line = next(line for line in lines if line.startswith("round 1/1: "))
    assert len(round_line) > 80 and round_line.endswith(" s)") and "evaluate" in round_line, finished.stdout
    final_line = next(line for line in lines if line.startswith("final test accuracy"))
    assert final_line.endswith(f"published as version 1: {volume / 'models' / 'mnist' / '1'}"), finished.stdout
    assert [line.strip() for line in lines if "round" in line and "test accuracy" in line and "┃" in line] == [
        "┃ round ┃ test accuracy ┃ test loss ┃ seconds ┃"
    ]  # the summary table keeps its shape
