"""Label a folder of digit images with a published model and write a CSV of file, digit, confidence.

    python -m server.label --model-dir volume/models/mnist --images photos/ --out labels.csv

Images are preprocessed exactly as the web demo does (any size, either polarity). A file that is not a usable
image gets an empty digit and its reason in the ``error`` column instead of stopping the whole folder (the exit
status is then 1; 2 for bad arguments or no model).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np

from common.atomic import atomic_path
from common.cli import ArgumentParser, user_errors
from common.data import to_model_input
from common.layout import models_dir, newest_version_dir
from server.preprocess import BadImage, preprocess

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
BATCH_SIZE = 256  # images per model call: big enough to be fast, small enough to bound memory
MAX_FILE_BYTES = 50 * 1024 * 1024  # a bigger "image" is refused unread (the demo's limit is 10 MB per request)


def build_parser() -> argparse.ArgumentParser:
    parser = ArgumentParser(prog="python -m server.label", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=models_dir(Path("volume")),
        help="published versions <dir>/<n>/model.tflite; the newest is used (default: %(default)s)",
    )
    parser.add_argument("--images", type=Path, required=True, help="folder of .png/.jpg/.jpeg images (not recursive)")
    parser.add_argument("--out", type=Path, required=True, help="CSV to write: file,digit,confidence,error")
    return parser


def label_files(model, paths: list[Path]) -> list[dict]:
    """One row per file, in order; unreadable images get an error instead of a digit."""
    rows, pending = [], []  # pending: (row, image) waiting for the next model call
    for path in paths:
        row = {"file": path.name, "digit": "", "confidence": "", "error": ""}
        rows.append(row)
        try:
            if path.stat().st_size > MAX_FILE_BYTES:
                raise BadImage(f"file too large ({path.stat().st_size:,} bytes; at most {MAX_FILE_BYTES:,})")
            pending.append((row, preprocess(path.read_bytes())))
        except (BadImage, OSError) as error:
            row["error"] = str(error)
        if len(pending) == BATCH_SIZE or (path is paths[-1] and pending):
            probabilities = model.predict(to_model_input(np.stack([image for _, image in pending])))
            for (pending_row, _), row_probabilities in zip(pending, probabilities):
                pending_row["digit"] = int(row_probabilities.argmax())
                pending_row["confidence"] = f"{row_probabilities.max():.4f}"
            pending = []
    return rows


@user_errors("server.label")
def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.images.is_dir():
        raise ValueError(f"--images {args.images}: not a folder")
    paths = sorted(path for path in args.images.iterdir() if path.is_file() and path.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise ValueError(f"--images {args.images}: no .png, .jpg or .jpeg files in it")
    version_dir = newest_version_dir(args.model_dir)
    if version_dir is None:
        raise ValueError(f"--model-dir {args.model_dir}: no published model (expected <dir>/<n>/model.h5 and info.json)")

    from server.model_store import load_version

    model = load_version(version_dir)
    rows = label_files(model, paths)
    with atomic_path(args.out) as temporary_path:
        with open(temporary_path, "w", newline="") as file:
            writer = csv.DictWriter(file, fieldnames=["file", "digit", "confidence", "error"])
            writer.writeheader()
            writer.writerows(rows)
    failed = sum(1 for row in rows if row["error"])
    print(f"labelled {len(rows) - failed} of {len(rows)} images with model version {model.version} -> {args.out}")
    if failed:
        print(f"{failed} file(s) could not be read; see the error column of {args.out}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
