"""Atomic writes: the target holds the old or the complete new contents, never a partial file."""

import h5py
import pytest
import torch

from encoding.atomic import atomic_target, write_atomic


def test_write_atomic_writes_text_and_bytes_and_replaces(tmp_path):
    target = tmp_path / "f.json"
    write_atomic(target, '{"a": 1}')
    assert target.read_text() == '{"a": 1}'
    write_atomic(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert [p.name for p in tmp_path.iterdir()] == ["f.json"]


def test_atomic_target_renames_only_a_complete_write(tmp_path):
    target = tmp_path / "state.pt"
    with atomic_target(target) as tmp:
        assert tmp.parent == tmp_path and not tmp.exists()
        torch.save({"step": 1}, tmp)
        assert not target.exists()
    assert torch.load(target, weights_only=True) == {"step": 1}
    with pytest.raises(RuntimeError, match="killed mid-write"), atomic_target(target) as tmp:
        torch.save({"step": 2}, tmp)
        raise RuntimeError("killed mid-write")
    assert torch.load(target, weights_only=True) == {"step": 1}  # the old contents, untouched
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary file left


def test_no_partial_file_when_the_writer_fails(tmp_path):
    target = tmp_path / "shard.h5"
    with pytest.raises(ValueError), atomic_target(target) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("x", data=[1, 2, 3])
        raise ValueError("bad data")
    assert not list(tmp_path.iterdir())
