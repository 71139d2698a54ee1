"""sagepose.fileio: the one atomic write -- a file is the old one or the new one, never a partial one."""
from __future__ import annotations

import json
import os

import pytest

from sagepose.fileio import atomic_open, write_json_atomic, write_text_atomic


def test_a_failure_mid_write_keeps_the_previous_file_and_leaves_no_temporary(tmp_path):
    path = tmp_path / "out" / "metrics.json"
    write_json_atomic(path, {"AP": 0.5})
    with pytest.raises(RuntimeError, match="killed"):
        with atomic_open(path) as f:
            f.write(b'{"AP": 0.')  # half a file ...
            raise RuntimeError("killed")  # ... then the writer dies
    assert json.loads(path.read_text()) == {"AP": 0.5}
    assert sorted(os.listdir(path.parent)) == ["metrics.json"]


def test_a_successful_write_replaces_the_file_whole(tmp_path):
    path = tmp_path / "a.txt"
    write_text_atomic(path, "old")
    write_text_atomic(path, "new text")
    assert path.read_text() == "new text"
    assert sorted(os.listdir(tmp_path)) == ["a.txt"]


def test_only_whole_file_modes_are_accepted(tmp_path):
    with pytest.raises(ValueError, match="'a'"):
        with atomic_open(tmp_path / "x", "a"):
            pass
