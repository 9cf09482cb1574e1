"""What native code writes to stderr, held to TF_CPP_MIN_LOG_LEVEL: TensorFlow's documented log setting.

TensorFlow and LiteRT honour that setting for most of their log lines, but not all: importing TensorFlow prints
absl's "before absl::InitializeLog()" banner and an INFO line that oneDNN is on, whatever the level, and the
first LiteRT interpreter prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.". No setting silences
those, so ``min_log_level_on_stderr`` hides the log lines below the level while the calls that print them run,
and passes everything else through as it comes: errors, Python tracebacks and warnings, any unrecognised line.

The lines pass through a small filter process, not a thread: native code may write while holding the GIL, and
lines written just before a crash still reach the terminal.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from typing import BinaryIO

# TF_CPP_MIN_LOG_LEVEL: 0 shows everything, 1 hides INFO, 2 also WARNING, 3 also ERROR; FATAL always shows.
SEVERITY_RANKS = {"I": 0, "W": 1, "E": 2, "F": 3}
# absl and TensorFlow's own lines: "I0000 00:00:1796601174.643428    2151 port.cc:153] oneDNN custom ...".
ABSL_LINE = re.compile(rb"([IWEF])\d{4} \d\d:\d\d:[\d.]+ +\d+ [^ \]]+:\d+\] ")
# LiteRT's (TensorFlow Lite's) lines: "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.".
LITERT_LINE = re.compile(rb"(VERBOSE|INFO|WARNING|ERROR): ")
LITERT_RANKS = {b"VERBOSE": 0, b"INFO": 0, b"WARNING": 1, b"ERROR": 2}
# absl prints this once before its first line; it describes absl's set-up, not a problem, so it counts as INFO.
ABSL_BANNER = b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
JOIN_SECONDS = 5.0  # how long leaving the block waits for the last lines to pass through

_filtering = False  # True while this process's stderr goes through a filter (an inner block adds nothing)


def min_log_level() -> int:
    """TF_CPP_MIN_LOG_LEVEL as TensorFlow reads it: unset or not a number is 0 (show everything)."""
    try:
        return int(os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0"))
    except ValueError:
        return 0


def severity_rank(line: bytes) -> int | None:
    """0 to 3 (INFO to FATAL) for a native log line, None for any other line."""
    if line.rstrip(b"\r\n") == ABSL_BANNER:
        return 0
    if match := ABSL_LINE.match(line):
        return SEVERITY_RANKS[match.group(1).decode()]
    if match := LITERT_LINE.match(line):
        return LITERT_RANKS[match.group(1)]
    return None


def is_hidden(line: bytes, level: int) -> bool:
    """True for a native log line below ``level``; a line that is not one, or FATAL, is never hidden."""
    rank = severity_rank(line)
    return rank is not None and rank < min(level, SEVERITY_RANKS["F"])


def forward_lines(source: BinaryIO, destination: BinaryIO, level: int) -> None:
    """Copy ``source`` to ``destination`` line by line until its end, leaving out the lines below ``level``."""
    for line in source:
        if not is_hidden(line, level):
            try:
                destination.write(line)
                destination.flush()
            except OSError:  # the terminal went away: keep reading, so no writer ever blocks on a full pipe
                pass


@contextlib.contextmanager
def min_log_level_on_stderr(level: int | None = None) -> Iterator[None]:
    """Meanwhile, native log lines on stderr below ``level`` (default: TF_CPP_MIN_LOG_LEVEL) are left out."""
    global _filtering
    level = min_log_level() if level is None else level
    if level <= 0 or _filtering:
        yield
        return
    read_end, write_end = os.pipe()
    try:
        # Its own session: a Ctrl-C meant for this program does not stop the lines on their way.
        line_filter = subprocess.Popen([sys.executable, "-I", "-S", __file__, str(level)], stdin=read_end, stdout=2,
                                       start_new_session=True)
    except OSError:  # no interpreter to start, or no stderr: everything shows, as without the filter
        os.close(write_end)
        line_filter = None
    finally:
        os.close(read_end)
    if line_filter is None:
        yield
        return
    sys.stderr.flush()
    saved_stderr = os.dup(2)
    os.dup2(write_end, 2)
    os.close(write_end)
    _filtering = True
    try:
        yield
    finally:
        _filtering = False
        sys.stderr.flush()
        os.dup2(saved_stderr, 2)  # the filter's input ends once no process here holds the pipe
        os.close(saved_stderr)
        try:
            line_filter.wait(timeout=JOIN_SECONDS)
        except subprocess.TimeoutExpired:  # a process started meanwhile still holds the pipe: let the filter run
            pass


if __name__ == "__main__":
    forward_lines(sys.stdin.buffer, sys.stdout.buffer, int(sys.argv[1]))
