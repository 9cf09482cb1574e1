"""Atomic writes leave either the old file or the complete new one."""

import json

import pytest

from common.atomic import atomic_path, read_json, write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"accuracy": 0.5})
    with pytest.raises(RuntimeError):
        with atomic_path(target) as temporary:
            temporary.write_text("{half")
            raise RuntimeError("killed mid-write")
    assert json.loads(target.read_text()) == {"accuracy": 0.5}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_the_temporary_sits_beside_the_target_with_the_requested_suffix(tmp_path):
    target = tmp_path / "sub" / "model.h5"
    with atomic_path(target, suffix=".tmp.h5") as temporary:
        assert temporary.parent == target.parent and temporary.name.endswith(".tmp.h5")
        assert not target.exists()
        temporary.write_bytes(b"x")
    assert target.read_bytes() == b"x"


def test_the_written_file_is_readable_by_every_user(tmp_path):
    """mkstemp's 0600 would hide a file root wrote (the image's MNIST) from the pods' user 10001."""
    target = tmp_path / "mnist.npz"
    with atomic_path(target) as temporary:
        temporary.write_bytes(b"x")
    assert target.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("content, message", [(None, "file not found"), ("{oops", "not readable JSON")])
def test_read_json_errors_name_the_file(tmp_path, content, message):
    path = tmp_path / "run.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ValueError, match=message) as raised:
        read_json(path)
    assert "run.json" in str(raised.value)
