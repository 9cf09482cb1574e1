"""Fixtures of the web-server tests: a real model trained in seconds, published versions, an app and a client."""

from __future__ import annotations

import io
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO_ROOT = Path(__file__).parents[2]
if str(REPO_ROOT) not in sys.path:  # so plain `pytest` finds the packages, not only `python -m pytest`
    sys.path.insert(0, str(REPO_ROOT))

from server import create_app  # noqa: E402
from server.quick_model import train_and_publish  # noqa: E402

MNIST_PATH = REPO_ROOT / "volume/data/mnist.npz"


@pytest.fixture(scope="session")
def mnist_test_set() -> tuple[np.ndarray, np.ndarray]:
    """MNIST's 10k test images (uint8, white on black) and labels."""
    with np.load(MNIST_PATH) as archive:
        return archive["x_test"], archive["y_test"]


@pytest.fixture(scope="session")
def trained_versions(tmp_path_factory) -> Path:
    """A directory holding versions 1 and 2 of a real model (1 epoch on 15k images, ~97%), trained once."""
    root = tmp_path_factory.mktemp("trained")
    train_and_publish(root, MNIST_PATH, version=1, num_images=15_000, seed=0)
    train_and_publish(root, MNIST_PATH, version=2, num_images=15_000, seed=1)
    return root


def publish(trained_versions: Path, models_dir: Path, version: int) -> Path:
    """Publish a trained version the way the publisher does: a complete directory renamed into place."""
    staging = models_dir / f".{version}.incoming"
    shutil.copytree(trained_versions / str(version), staging)
    final = models_dir / str(version)
    staging.rename(final)
    return final


@pytest.fixture
def models_dir(tmp_path, trained_versions) -> Path:
    """A models directory with version 1 published."""
    directory = tmp_path / "models" / "mnist"
    directory.mkdir(parents=True)
    publish(trained_versions, directory, 1)
    return directory


def make_app(models_dir: Path, **config):
    app = create_app({"TESTING": True, "MODEL_DIR": str(models_dir), "RELOAD_INTERVAL": 0.1, **config})
    return app


@pytest.fixture
def app(models_dir):
    app = make_app(models_dir)
    yield app
    app.extensions["mnist_model_store"].stop()


@pytest.fixture
def client(app):
    return app.test_client()


def wait_for(condition, timeout: float = 20.0, interval: float = 0.05):
    """Poll ``condition`` until it returns something truthy (the model loads in a background thread)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = condition()
        if result:
            return result
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {condition}")


@pytest.fixture
def ready_client(client):
    """A client whose app has loaded version 1."""
    wait_for(lambda: client.get("/readyz").status_code == 200)
    return client


@pytest.fixture
def empty_app(tmp_path):
    """An app whose models directory has nothing published yet."""
    app = make_app(tmp_path / "models" / "mnist")
    yield app
    app.extensions["mnist_model_store"].stop()


@pytest.fixture(scope="session")
def png():
    """``png(image, size=None, invert=False, mode="L")`` -> PNG bytes of a uint8 grayscale image."""
    return png_bytes


@pytest.fixture(scope="session")
def jpeg():
    """``jpeg(image, size=None, invert=False)`` -> JPEG bytes."""
    return jpeg_bytes


def png_bytes(image: np.ndarray, size: int | None = None, invert: bool = False, mode: str = "L") -> bytes:
    """Encode a uint8 grayscale image as PNG, optionally enlarged, inverted (black on white) or as RGB."""
    if invert:
        image = 255 - image
    picture = Image.fromarray(image).convert(mode)
    if size:
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


def jpeg_bytes(image: np.ndarray, size: int | None = None, invert: bool = False) -> bytes:
    if invert:
        image = 255 - image
    picture = Image.fromarray(image).convert("RGB")
    if size:
        picture = picture.resize((size, size), Image.Resampling.BICUBIC)
    buffer = io.BytesIO()
    picture.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def pytest_collection_modifyitems(config, items):
    """Tests that need the trained model are end-to-end (`-m e2e`): `make test-fast` skips them."""
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents and "trained_versions" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.e2e)
