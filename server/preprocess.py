"""Turn any digit picture into the 28x28 image MNIST would have made of it. Pillow and numpy only, no TensorFlow.

MNIST's recipe (LeCun et al.): white ink on black, the digit's bounding box scaled (anti-aliased, aspect kept) into
20x20, then placed in a 28x28 field so that its centre of mass sits in the middle. ``decode_image`` is the I/O edge
(bytes in, grayscale array out, every bad input a ``BadImage``); ``to_mnist`` is the pure numpy core.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, UnidentifiedImageError

MNIST_SIZE = 28
DIGIT_BOX = 20  # MNIST digits fit in 20x20; the 4-pixel margin leaves room for centring by mass.
ACCEPTED_FORMATS = ("PNG", "JPEG")
MAX_PIXELS = 40_000_000  # ~ a 7000x5700 photo; larger headers are refused before a single pixel is decoded
WORKING_SIZE = 512  # big photos are shrunk to this before analysis: plenty for a 20x20 result, and fast
INK_THRESHOLD = 0.2  # fraction of the ink's intensity range that counts as part of the digit for cropping


class BadImage(ValueError):
    """The upload is not a usable picture; ``status`` is the HTTP status that says why."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def decode_image(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """PNG/JPEG bytes -> uint8 grayscale (h, w); transparent images give their opacity as ink."""
    if not data:
        raise BadImage("the image is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            # Pillow's own decompression-bomb check only warns below 2x its limit; make it an error too.
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size  # read from the header: nothing decoded yet
                if width * height > max_pixels:
                    raise BadImage(
                        f"the image is too large ({width}x{height} pixels; at most {max_pixels:,} pixels)", 413
                    )
                if image.format == "JPEG":
                    # Let libjpeg decode at 1/2, 1/4 or 1/8 scale: a 12-megapixel photo loads in a few ms.
                    image.draft("L", (WORKING_SIZE, WORKING_SIZE))
                image.load()
                return _to_grayscale(image)
    except BadImage:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise BadImage("the image is too large (decompression bomb guard)", 413) from None
    except UnidentifiedImageError:
        raise BadImage("not a PNG or JPEG image") from None
    except (OSError, SyntaxError, ValueError, EOFError) as error:
        # Truncated or corrupt files land here (Pillow raises OSError "image file is truncated" and friends).
        raise BadImage(f"the image could not be decoded ({error})") from None


def _to_grayscale(image: Image.Image) -> np.ndarray:
    """A loaded Pillow image -> uint8 (h, w), shrunk to at most WORKING_SIZE on its long side."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        alpha = image.getchannel("A")
        if alpha.getextrema()[0] < 255:
            # A drawing on a transparent background: where it is opaque is the digit, whatever its colour.
            image = alpha
    image = image.convert("L")
    image.thumbnail((WORKING_SIZE, WORKING_SIZE), Image.Resampling.BOX)
    return np.asarray(image)


def to_mnist(gray: np.ndarray) -> np.ndarray:
    """Grayscale (h, w), uint8 or float in [0, 1], any polarity -> uint8 (28, 28): white digit in a 20x20 box,
    centred by mass. Whole-image steps stay in uint8 (this runs for every request); only the digit becomes float."""
    gray = np.asarray(gray)
    if gray.ndim != 2 or gray.size == 0:
        raise BadImage(f"expected a 2-D grayscale image, got shape {gray.shape}")
    if gray.dtype != np.uint8:
        gray = np.round(np.clip(gray, 0.0, 1.0) * 255.0).astype(np.uint8)
    border = np.concatenate([gray[0, :], gray[-1, :], gray[:, 0], gray[:, -1]])
    background = float(np.median(border))
    # Ink is whatever differs from the background: lighter on a dark field (MNIST's way), darker on a light one
    # (paper, a whiteboard, a scan). ``peak`` is the strongest ink; dividing by (peak - background) below turns
    # both into MNIST's white-on-black, the background to 0 and the strongest stroke to 1.
    peak = float(gray.min() if background > 127 else gray.max())
    contrast = peak - background
    if abs(contrast) < 0.1 * 255:  # no stroke stands out from the background (blank, or flat grey)
        raise BadImage("no digit found: the image is blank or has no contrast")
    threshold = background + INK_THRESHOLD * contrast
    top, bottom, left, right = _bounding_box(gray >= threshold if contrast > 0 else gray <= threshold)
    digit = np.clip((gray[top:bottom, left:right].astype(np.float32) - background) / contrast, 0.0, 1.0)
    return _centre_by_mass(_fit_in_box(digit, DIGIT_BOX), MNIST_SIZE)


def _bounding_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """top, bottom, left, right (exclusive) of the True pixels of a non-empty mask."""
    rows, columns = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    return int(rows[0]), int(rows[-1]) + 1, int(columns[0]), int(columns[-1]) + 1


def _fit_in_box(digit: np.ndarray, box: int) -> np.ndarray:
    """Scale ``digit`` (float in [0, 1]) so its longer side is ``box`` pixels, keeping the aspect ratio."""
    height, width = digit.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))  # Pillow wants (width, height)
    # Anti-aliased like MNIST's; reducing_gap first averages whole blocks (fast), then Lanczos does the rest.
    resized = Image.fromarray(digit).resize(new_size, Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _centre_by_mass(digit: np.ndarray, size: int) -> np.ndarray:
    """Place ``digit`` in a size x size black field with its centre of mass in the middle, never cut off."""
    height, width = digit.shape
    total = float(digit.sum())
    rows, columns = np.indices(digit.shape)
    mass_row = float((rows * digit).sum()) / total
    mass_column = float((columns * digit).sum()) / total
    middle = size / 2  # MNIST's centres of mass sit at (14.0, 14.0) in pixel indices (measured: +-0.3)
    # Clip so the whole digit stays inside the field (MNIST shifts but never crops).
    top = int(np.clip(round(middle - mass_row), 0, size - height))
    left = int(np.clip(round(middle - mass_column), 0, size - width))
    field = np.zeros((size, size), dtype=np.float32)
    field[top : top + height, left : left + width] = digit
    return np.round(field * 255.0).astype(np.uint8)


def preprocess(data: bytes, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Image file bytes -> the uint8 (28, 28) MNIST-style image the model sees."""
    return to_mnist(decode_image(data, max_pixels=max_pixels))
