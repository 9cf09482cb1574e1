"""The MNIST-style preprocessing: pure numpy tests on synthetic images, then decoding of real file formats."""

from __future__ import annotations

import io
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from server.preprocess import MNIST_SIZE, BadImage, decode_image, preprocess, to_mnist

REPO_ROOT = Path(__file__).parents[2]


def ink_box(image: np.ndarray) -> tuple[int, int]:
    """Height and width of the bounding box of the non-zero pixels."""
    rows, columns = np.nonzero(image)
    return rows.max() - rows.min() + 1, columns.max() - columns.min() + 1


def centre_of_mass(image: np.ndarray) -> tuple[float, float]:
    rows, columns = np.indices(image.shape)
    total = image.sum()
    return float((rows * image).sum() / total), float((columns * image).sum() / total)


def test_the_module_does_not_import_tensorflow():
    code = "import sys, server.preprocess; sys.exit('tensorflow' in sys.modules or 'keras' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT).returncode == 0


def test_a_small_off_centre_square_is_scaled_to_20_pixels_and_centred():
    # Prepare: a 10x10 white square in the corner of a 100x100 black field
    gray = np.zeros((100, 100), dtype=np.float32)
    gray[5:15, 70:80] = 1.0

    # Execute
    result = to_mnist(gray)

    # Assert
    assert result.shape == (MNIST_SIZE, MNIST_SIZE) and result.dtype == np.uint8
    assert ink_box(result) == (20, 20)
    np.testing.assert_allclose(centre_of_mass(result.astype(float)), (14.0, 14.0), atol=0.6)
    assert result.max() == 255


def test_the_aspect_ratio_is_kept():
    gray = np.zeros((300, 300), dtype=np.float32)
    gray[50:250, 140:160] = 1.0  # a 200x20 bar, like a "1"

    height, width = ink_box(to_mnist(gray))

    assert height == 20
    assert width in (2, 3, 4)  # 20 * 20 / 200 = 2 pixels, plus anti-aliased edges


def test_an_asymmetric_digit_is_centred_by_mass_not_by_box():
    gray = np.zeros((60, 60), dtype=np.float32)
    gray[10:50, 10:14] = 1.0  # the stem of an "L" ...
    gray[46:50, 10:34] = 1.0  # ... and its heavy foot

    result = to_mnist(gray).astype(float)

    np.testing.assert_allclose(centre_of_mass(result), (14.0, 14.0), atol=0.6)
    rows, columns = np.nonzero(result)
    assert rows.max() - 14 < 14 - rows.min()  # the box sits off-centre, towards the foot


@pytest.mark.parametrize("background", [1.0, 0.85])
def test_dark_ink_on_a_light_background_is_inverted(background):
    # Prepare: the same digit white-on-black and dark-on-light (clean white, or grey paper)
    white_on_black = np.zeros((80, 80), dtype=np.float32)
    white_on_black[20:60, 30:40] = 1.0
    white_on_black[20:30, 30:60] = 1.0
    dark_on_light = background - white_on_black * (background - 0.1)

    # Execute / Assert: both give the MNIST polarity and the same picture
    expected = to_mnist(white_on_black)
    result = to_mnist(dark_on_light)
    assert result[0, 0] == 0 and result.max() == 255
    np.testing.assert_allclose(result.astype(int), expected.astype(int), atol=2)


def test_a_grey_background_becomes_black():
    gray = np.full((50, 50), 0.3, dtype=np.float32)
    gray[10:40, 20:30] = 0.9

    result = to_mnist(gray)

    assert (result == 0).sum() > 28 * 28 / 2  # the background is exactly 0, as in MNIST
    assert result.max() == 255


def test_the_digit_is_never_cut_off_even_when_its_mass_is_far_from_its_centre():
    gray = np.zeros((100, 100), dtype=np.float32)
    gray[0:20, 0:20] = 1.0  # a heavy blob in one corner pulls the centre of mass there ...
    gray[96:100, 96:100] = 0.5  # ... far from a light mark in the opposite corner

    result = to_mnist(gray)

    # Centred by mass alone, the blob would sit near the middle and the light mark would fall off the field;
    # the clip keeps the whole 20x20 digit inside: both corners of it are still ink.
    assert ink_box(result) == (20, 20)
    rows, columns = np.nonzero(result)
    assert result[rows.max(), columns.max()] > 0 and result[rows.min(), columns.min()] > 0


@pytest.mark.parametrize("value", [0.0, 1.0, 0.5])
def test_a_blank_image_is_refused(value):
    with pytest.raises(BadImage, match="no digit"):
        to_mnist(np.full((40, 40), value, dtype=np.float32))


def test_mnist_digits_come_back_almost_unchanged(mnist_test_set):
    images, _ = mnist_test_set

    differences = [np.abs(to_mnist(image / 255.0).astype(int) - image).mean() for image in images[:300]]

    assert np.median(differences) < 1.0  # out of 255: MNIST is a fixed point of the recipe


# ---- decoding real files ----


def test_png_and_jpeg_of_either_polarity_and_any_size_give_the_same_digit(mnist_test_set, png, jpeg):
    digit = mnist_test_set[0][0]
    expected = to_mnist(digit / 255.0)

    for data in (png(digit), png(digit, size=400, invert=True), jpeg(digit, size=1000, invert=True),
                 png(digit, size=60, mode="RGB")):
        result = preprocess(data)
        assert np.abs(result.astype(int) - expected).mean() < 12, "should be the same digit"


def test_a_drawing_on_a_transparent_background_uses_its_opacity_as_ink():
    picture = Image.new("RGBA", (100, 100), (0, 0, 0, 0))
    picture.paste((0, 0, 0, 255), (40, 10, 60, 90))  # black stroke on transparent
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")

    result = preprocess(buffer.getvalue())

    assert ink_box(result)[0] == 20 and result.max() == 255


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (a decompression bomb's signature), without the pixels."""
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IDAT", zlib.compress(b"")) + png_chunk(b"IEND", b"")


@pytest.mark.parametrize(
    "data, status, message",
    [
        (b"", 400, "empty"),
        (b"hello, I am not a picture", 400, "not a PNG or JPEG"),
        (b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", 400, "not a PNG or JPEG"),
        (png_header_only(8_000, 8_000), 413, "too large"),  # above our limit, below Pillow's own
        (png_header_only(50_000, 50_000), 413, "too large"),  # above Pillow's limit too
    ],
    ids=["empty", "text", "gif", "bomb", "huge-bomb"],
)
def test_unusable_files_are_refused_with_a_reason(data, status, message):
    with pytest.raises(BadImage, match=message) as caught:
        decode_image(data)
    assert caught.value.status == status


@pytest.mark.parametrize("encoding", ["png", "jpeg"])
def test_a_truncated_file_is_refused(encoding, mnist_test_set, request):
    data = request.getfixturevalue(encoding)(mnist_test_set[0][0], size=200)

    with pytest.raises(BadImage):
        decode_image(data[: len(data) // 2])
