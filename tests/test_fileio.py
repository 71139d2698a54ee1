"""sagepose.fileio: the one atomic write -- a file is the old one or the new one, never a partial one -- and the
rule for a previous run's outputs: never replaced silently."""
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


def test_fresh_output_dir_numbers_a_used_folder_and_takes_an_empty_one(tmp_path):
    from sagepose.fileio import fresh_output_dir

    run = tmp_path / "run"
    assert fresh_output_dir(run) == (run, False)  # absent
    run.mkdir()
    assert fresh_output_dir(run) == (run, False)  # empty
    (run / "last.ckpt").write_text("x")
    assert fresh_output_dir(run) == (tmp_path / "run-2", True)
    (tmp_path / "run-2").mkdir()
    (tmp_path / "run-2" / "a").write_text("x")
    (tmp_path / "run-3").mkdir()  # empty: taken
    assert fresh_output_dir(run) == (tmp_path / "run-3", True)
    assert fresh_output_dir(run, overwrite=True) == (run, False)


def test_check_output_file_refuses_an_existing_file_in_one_line(tmp_path):
    from sagepose.errors import OutputExistsError
    from sagepose.fileio import check_output_file

    f = tmp_path / "model.onnx"
    assert check_output_file(f) == f
    f.write_text("x")
    with pytest.raises(OutputExistsError, match=r"model.onnx exists; pass --overwrite to replace it"):
        check_output_file(f)
    assert check_output_file(f, overwrite=True) == f


def test_remove_outputs_removes_only_the_named_outputs_inside_the_folder(tmp_path):
    from sagepose.fileio import remove_outputs

    run, outside = tmp_path / "run", tmp_path / "keep.txt"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "best.ckpt").write_text("x")
    (run / "metrics.csv").write_text("x")
    (run / "notes.txt").write_text("mine")
    outside.write_text("x")
    (run / "link").symlink_to(outside)
    removed = remove_outputs(run, ["checkpoints", "metrics.csv", "curves.png", "../keep.txt", "link"])
    assert sorted(p.name for p in removed) == ["checkpoints", "link", "metrics.csv"]
    assert sorted(p.name for p in run.iterdir()) == ["notes.txt"] and outside.read_text() == "x"
