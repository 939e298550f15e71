"""Atomic writes: whole or absent, and readable like a plain write."""

from __future__ import annotations

import os

import pytest

from devinterp import _io


def test_atomic_write_has_the_permissions_of_a_plain_write(tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    written = _io.write_text(tmp_path / "atomic.txt", "x")
    assert (written.stat().st_mode & 0o777) == (plain.stat().st_mode & 0o777)


def test_a_failing_writer_leaves_neither_file_nor_temp(tmp_path):
    target = tmp_path / "out.json"

    def boom(path):
        path.write_text("half")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        _io.atomic_write(target, boom)
    assert not target.exists() and os.listdir(tmp_path) == []
