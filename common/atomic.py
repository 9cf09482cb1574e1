"""Atomic writes: a reader sees the old file or the whole new one, never a half-written file."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final_path: Path, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place only if the block succeeds.

    ``suffix`` ends the temporary name, for writers that pick a format from it (Keras wants ``.h5``).
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    # Same directory, so the rename never crosses a filesystem (atomic on local disks and NFS).
    descriptor, temporary_name = tempfile.mkstemp(
        prefix=f".{final_path.name}.", suffix=suffix, dir=final_path.parent
    )
    # mkstemp makes the file private (0600); what we publish is read by other users too (the image's user
    # reads the MNIST file root wrote at build time; the web demo reads the trainers' models): 0644 as
    # open() gives under the usual umask.
    os.fchmod(descriptor, 0o644)
    os.close(descriptor)
    temporary_path = Path(temporary_name)
    try:
        yield temporary_path
        os.replace(temporary_path, final_path)
    finally:
        temporary_path.unlink(missing_ok=True)


def write_text(path: Path, text: str) -> None:
    """Write ``text`` and a final newline, atomically."""
    with atomic_path(path) as temporary_path:
        temporary_path.write_text(text + "\n")


def write_json(path: Path, payload: Any) -> None:
    """Write ``payload`` as indented JSON, atomically."""
    write_text(path, json.dumps(payload, indent=2, sort_keys=True))


def read_json(path: Path) -> Any:
    """Read a JSON file, turning a missing or corrupt file into a ValueError a user can act on."""
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ValueError(f"{path}: not readable JSON ({error})") from None


def write_json_once(path: Path, payload: Any) -> bool:
    """Write ``payload`` as JSON only if ``path`` does not exist yet (atomic); False if another writer was first."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.fchmod(descriptor, 0o644)
    with os.fdopen(descriptor, "w") as handle:
        handle.write(json.dumps(payload, indent=2, sort_keys=True) + "\n")
    try:
        # A hard link never replaces an existing file (on local disks and NFS alike): the first writer wins.
        os.link(temporary_name, path)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary_name)
