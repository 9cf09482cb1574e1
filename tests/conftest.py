"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
# Tests import the components as top-level packages, as `python -m <name>` does from the repo root.
sys.path.insert(0, str(REPO_ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

REAL_MNIST = REPO_ROOT / "volume" / "data" / "mnist.npz"


@pytest.fixture(scope="session")
def real_mnist_path() -> Path:
    """The real MNIST npz that the setup step fetched; its absence is a setup error, not a skip."""
    path = Path(os.environ.get("MNIST_NPZ", REAL_MNIST))
    if not path.is_file():
        pytest.fail(f"{path} missing: run `make data` (python -m dataset --out {path}) first")
    return path
