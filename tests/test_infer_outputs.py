"""What ``sagepose infer`` / ``export`` / ``demo`` leave on disk and say: a previous run's folder is never reused
silently, a model without weights is refused, the summary says what the poses are worth, DeepLabCut tables, renders,
one-line errors, and ``predict(color=...)``."""
from __future__ import annotations

import csv
import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch
from test_infer import FixedModel

from sagepose.cli.main import main
from sagepose.infer import run_inference
from sagepose.keypoints import COCO17, KeypointSchema


def _images(folder, n=3, size=(64, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        cv2.imwrite(str(folder / f"img{i:02d}.png"), rng.integers(0, 256, (*size, 3), dtype=np.uint8))
    return folder


def _infer(*args):
    return main(["infer", "demo_tiny_vit", "--random-weights", *map(str, args)])


def _sagepose(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "sagepose.cli.main", *map(str, args)], capture_output=True,
                          text=True, cwd=cwd)


# ---- a previous run is never overwritten silently ------------------------------------------------------------
def test_infer_twice_into_one_out_writes_the_second_run_to_out_2_and_keeps_the_first(tmp_path, capsys):
    frames, out = _images(tmp_path / "frames"), tmp_path / "runs" / "infer"
    assert _infer(frames, "--out", out) == 0
    first = (out / "results.json").read_text()
    assert len(json.loads(first)) == 3
    capsys.readouterr()
    assert _infer(frames / "img01.png", "--out", out) == 0
    printed = capsys.readouterr().out
    assert f"{out} holds a previous run's outputs: writing to {out}-2 (--overwrite to replace them)" in printed
    assert (out / "results.json").read_text() == first and len(list((out / "vis").iterdir())) == 3
    assert len(json.loads((tmp_path / "runs" / "infer-2" / "results.json").read_text())) == 1
    assert [p.name for p in (tmp_path / "runs" / "infer-2" / "vis").iterdir()] == ["img01.png"]


def test_infer_overwrite_replaces_the_previous_run_and_leaves_no_stale_renders_or_tables(tmp_path, capsys):
    frames, out = _images(tmp_path / "frames"), tmp_path / "out"
    assert _infer(frames, "--out", out, "--format", "dlc") == 0
    (out / "notes.txt").write_text("mine")  # not infer's: stays
    assert (out / "framesDLC_sagepose_demo_tiny_vit.csv").is_file()
    assert _infer(frames / "img01.png", "--out", out, "--overwrite") == 0
    assert "--overwrite: removed the previous run's" in capsys.readouterr().out
    assert len(json.loads((out / "results.json").read_text())) == 1
    assert [p.name for p in (out / "vis").iterdir()] == ["img01.png"]
    assert sorted(p.name for p in out.iterdir()) == [".sagepose-run.json", "notes.txt", "results.json", "vis"]
    assert not (tmp_path / "out-2").exists()


def test_export_refuses_an_existing_file_or_its_data_file_unless_overwrite(tmp_path, capsys, monkeypatch):
    import sagepose.onnx_model

    calls = []
    monkeypatch.setattr(sagepose.onnx_model, "export_onnx", lambda model, path, **kw: calls.append(path) or dict(
        path=str(path), data_file=None, opset=18, dynamic_batch=False, batch=1, fp16=False, bytes=0, seconds=0))
    out = tmp_path / "m.onnx"
    out.write_bytes(b"an earlier export")
    argv = ["export", "demo_tiny_vit", "--random-weights", "--out", str(out)]
    assert main(argv) == 1
    assert capsys.readouterr().err == f"sagepose: error: {out} exists; pass --overwrite to replace it, or choose " \
                                      "another path\n"
    out.unlink()
    (tmp_path / "m.onnx.data").write_bytes(b"its weights")
    assert main(argv) == 1 and f"{out}.data exists; pass --overwrite" in capsys.readouterr().err
    assert calls == [] and (tmp_path / "m.onnx.data").read_bytes() == b"its weights"
    assert main([*argv, "--overwrite"]) == 0 and calls == [str(out)]


# ---- a model without weights ----------------------------------------------------------------------------------
@pytest.mark.parametrize("command", ["infer", "export"])
def test_a_zoo_name_without_weights_is_refused_in_one_line_unless_random_weights(tmp_path, command, capsys):
    image = _images(tmp_path / "frames", n=1) / "img00.png"
    argv = ["infer", "vitpose-s", str(image)] if command == "infer" else ["export", "vitpose-s", "--out",
                                                                          str(tmp_path / "m.onnx")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err == ("sagepose: error: vitpose-s: no weights given, so its predictions would be random: pass "
                   "--checkpoint FILE (or name published weights in its place: vitpose-s-coco), or "
                   "--random-weights to run it anyway\n")
    assert not (tmp_path / "runs").exists() and not (tmp_path / "m.onnx").exists()
    if command == "infer":
        assert main(["infer", "vit-tiny", str(image), "--random-weights", "--out", str(tmp_path / "o"),
                     "--no-render"]) == 0


# ---- the summary says what the poses are worth ----------------------------------------------------------------
def test_without_boxes_the_summary_says_each_image_was_one_person(tmp_path, capsys):
    assert _infer(_images(tmp_path / "frames"), "--out", tmp_path / "out", "--no-render") == 0
    printed = capsys.readouterr().out.splitlines()
    assert ("no person boxes given: each image / frame was taken as one person (3 poses from 3 images); for several "
            "people per image pass --detector (e.g. yolox-m-humanart) or --det-json") in printed


def test_the_summary_says_when_no_keypoint_passed_the_threshold(tmp_path):
    folder = _images(tmp_path / "frames")
    run = run_inference(FixedModel(scores=np.linspace(0.02, 0.12, 17)), folder, tmp_path / "out", score_thr=0.3)
    assert ("no keypoint scored above --kpt-thr 0.3 in 3 of 3 poses; the renders show no joints for them -- lower "
            "--kpt-thr (scores max 0.12)") in run.summary()
    assert not any("--kpt-thr" in line for line in run_inference(
        FixedModel(scores=np.full(17, 0.5)), folder, tmp_path / "o2", score_thr=0.3).summary())


# ---- DeepLabCut tables -----------------------------------------------------------------------------------------
def _read_dlc(path):
    with open(path, newline="") as f:
        return list(csv.reader(f))


def test_dlc_table_of_an_image_folder_has_deeplabcuts_single_animal_header_and_the_results_values(tmp_path):
    folder = _images(tmp_path / "frames")
    boxes = {"img00.png": np.array([[4, 4, 40, 60, 0.9]], np.float32),
             "img02.png": np.array([[10, 8, 44, 62, 0.8]], np.float32)}  # img01: no person
    model = FixedModel(scores=np.linspace(0.1, 0.9, 17))
    run_inference(model, folder, tmp_path / "out", boxes=boxes, render=False, fmt="dlc", scorer="sagepose_tiny")
    path = tmp_path / "out" / "framesDLC_sagepose_tiny.csv"
    rows = _read_dlc(path)
    names = list(COCO17.keypoints)
    assert rows[0] == ["scorer", *["sagepose_tiny"] * 51]
    assert rows[1] == ["bodyparts", *(n for n in names for _ in range(3))]
    assert rows[2] == ["coords", *["x", "y", "likelihood"] * 17]
    assert [r[0] for r in rows[3:]] == ["img00.png", "img01.png", "img02.png"]
    assert rows[4][1:] == [""] * 51  # no detection: empty cells
    results = {r["file_name"]: r["keypoints"] for r in json.loads((tmp_path / "out" / "results.json").read_text())}
    for row in (rows[3], rows[5]):
        assert [float(v) for v in row[1:]] == results[row[0]]


def test_dlc_table_reads_with_pandas_as_deeplabcut_output(tmp_path):
    pd = pytest.importorskip("pandas")
    folder = _images(tmp_path / "frames")
    boxes = {"img00.png": np.array([[4, 4, 40, 60, 0.9]], np.float32)}
    run_inference(FixedModel(), folder, tmp_path / "out", boxes=boxes, render=False, fmt="dlc", scorer="sagepose_m")
    df = pd.read_csv(tmp_path / "out" / "framesDLC_sagepose_m.csv", header=[0, 1, 2], index_col=0)
    assert df.columns.names == ["scorer", "bodyparts", "coords"]
    assert list(df.index) == ["img00.png", "img01.png", "img02.png"]
    result = json.loads((tmp_path / "out" / "results.json").read_text())[0]["keypoints"]
    np.testing.assert_array_equal(df.loc["img00.png"].to_numpy(), result)
    assert df.loc["img00.png", ("sagepose_m", "left_wrist", "likelihood")] == result[9 * 3 + 2]
    assert df.loc[["img01.png", "img02.png"]].isna().all().all()


def test_dlc_table_with_several_people_in_a_frame_has_the_multi_animal_header(tmp_path):
    folder = _images(tmp_path / "frames", n=2)
    boxes = {"img00.png": np.array([[4, 4, 20, 40, 0.9], [22, 4, 44, 60, 0.8]], np.float32),
             "img01.png": np.array([[10, 8, 44, 62, 0.8]], np.float32)}
    run_inference(FixedModel(), folder, tmp_path / "out", boxes=boxes, render=False, fmt="dlc", scorer="s")
    rows = _read_dlc(tmp_path / "out" / "framesDLC_s.csv")
    assert [r[0] for r in rows[:4]] == ["scorer", "individuals", "bodyparts", "coords"]
    assert rows[1][1:] == ["individual1"] * 51 + ["individual2"] * 51
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert [float(v) for v in rows[4][1:]] == results[0]["keypoints"] + results[1]["keypoints"]
    assert [float(v) for v in rows[5][1:52]] == results[2]["keypoints"] and rows[5][52:] == [""] * 51
    pd = pytest.importorskip("pandas")
    df = pd.read_csv(tmp_path / "out" / "framesDLC_s.csv", header=[0, 1, 2, 3], index_col=0)
    assert df.columns.names == ["scorer", "individuals", "bodyparts", "coords"] and df.shape == (2, 102)


def test_dlc_table_of_a_video_has_a_row_per_frame_the_unreadable_one_empty(tmp_path, capsys):
    from test_video import FRAMES, write_video

    video = write_video(tmp_path / "clip.avi", broken=(5,))
    out = tmp_path / "out"
    assert _infer(video, "--out", out, "--format", "dlc", "--no-render") == 0
    path = out / "clipDLC_sagepose_demo_tiny_vit.csv"
    assert str(path) in capsys.readouterr().out
    rows = _read_dlc(path)
    assert [r[0] for r in rows[:3]] == ["scorer", "bodyparts", "coords"]
    assert [int(r[0]) for r in rows[3:]] == list(range(FRAMES)) and rows[3 + 5][1:] == [""] * 51
    by_frame = {r["image_id"]: r["keypoints"] for r in json.loads((out / "results.json").read_text())}
    assert all([float(v) for v in rows[3 + i][1:]] == by_frame[i] for i in by_frame)


# ---- renders ---------------------------------------------------------------------------------------------------
def test_renders_draw_each_joint_in_its_colour_and_the_skeleton_between():
    from sagepose.viz import draw_poses, joint_colors

    schema = KeypointSchema("three", ("a", "b", "c"), skeleton=((0, 1),))
    image = np.zeros((200, 200, 3), np.uint8)
    kp = np.array([[[40, 100], [160, 100], [100, 40]]], np.float32)
    out = draw_poses(image, kp, np.array([[0.9, 0.9, 0.1]], np.float32), schema, score_thr=0.3)
    colors = joint_colors(3).astype(int)
    assert len({tuple(c) for c in colors}) == 3
    np.testing.assert_array_equal(out[100, 40], colors[0])
    np.testing.assert_array_equal(out[100, 160], colors[1])
    np.testing.assert_array_equal(out[100, 100], (colors[0] + colors[1]) // 2)  # the limb, in its joints' mean
    assert not out[40, 100].any() and not out[150, 100].any()  # under the threshold: not drawn; nothing elsewhere


def test_without_a_skeleton_the_points_are_drawn_large_enough_to_see():
    from sagepose.viz import draw_poses

    image = np.zeros((480, 640, 3), np.uint8)
    kp, sc = np.array([[[320, 240], [100, 100]]], np.float32), np.ones((1, 2), np.float32)
    with_limbs = draw_poses(image, kp, sc, KeypointSchema("s", ("a", "b"), skeleton=((0, 1),)))
    points = draw_poses(image, kp, sc, KeypointSchema("dlc", ("a", "b")))
    radius = max(2, round(480 / 160))
    assert points[240, 320 + radius + 2].any() and not with_limbs[240 + radius + 2, 320].any()
    assert points[240, 320 + 2 * radius - 1].any()


# ---- one-line errors -------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA machine runs --device cuda")
def test_device_cuda_on_a_cpu_only_torch_is_one_line(tmp_path):
    image = _images(tmp_path / "frames", n=1) / "img00.png"
    r = _sagepose("infer", "demo_tiny_vit", image, "--random-weights", "--device", "cuda", cwd=tmp_path)
    assert r.returncode == 1 and "Traceback" not in r.stderr and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr.startswith("sagepose: error: device 'cuda': ") and "--device cpu" in r.stderr
    from sagepose.models.estimator import DeviceError, check_device

    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(DeviceError, match="device 'tpu': not a device torch knows"):
        check_device("tpu")


def test_a_text_file_named_ckpt_is_one_line_saying_it_is_not_a_checkpoint(tmp_path):
    notes = tmp_path / "notes.ckpt"
    notes.write_text("model: vitpose-s\nlr: 0.001\n")
    r = _sagepose("infer", notes, tmp_path / "img.png", cwd=tmp_path)
    assert r.returncode == 1 and r.stderr.count("\n") == 1, r.stderr
    assert r.stderr == f"sagepose: error: {notes}: not a checkpoint (a text file: 'model: vitpose-s')\n"
    from sagepose.models.checkpoint import CheckpointReadError, read_checkpoint

    pickle_like = tmp_path / "odd.pth"
    pickle_like.write_bytes(b"\x80\x02garbage that is no pickle")
    with pytest.raises(CheckpointReadError) as info:
        read_checkpoint(pickle_like)
    assert "weights_only" not in str(info.value) and str(info.value).startswith(f"{pickle_like}: cannot read")


def test_demo_folders_are_numbered_and_the_ssl_demo_reuses_its_stage_0_model(tmp_path):
    from sagepose.demo import demo_folder, ssl_demo_folder

    out = tmp_path / "demo"
    assert demo_folder(out) == (out, [])
    (out / "vis").mkdir(parents=True)
    (out / "metrics.json").write_text("{}")
    (out / "mine.txt").write_text("mine")
    assert demo_folder(out) == (tmp_path / "demo-2", [])
    folder, removed = demo_folder(out, overwrite=True)
    assert folder == out and sorted(removed) == ["metrics.json", "vis"] and (out / "mine.txt").exists()

    ssl = tmp_path / "demo-ssl"
    ckpt = ssl / "pretrained" / "checkpoints" / "best.ckpt"
    ckpt.parent.mkdir(parents=True)
    ckpt.write_bytes(b"weights")
    (ssl / "pretrained" / "metrics.json").write_text(json.dumps({"checkpoint": str(ckpt)}))
    assert ssl_demo_folder(ssl) == (ssl, [], None)  # only its stage 0: go on in it, the model reused there
    for name in ("data", "init", "supervised-seed0", "semi-seed0"):
        (ssl / name).mkdir()
    (ssl / "summary.json").write_text("{}")
    assert ssl_demo_folder(ssl) == (tmp_path / "demo-ssl-2", [], str(ckpt))  # a finished demo: kept
    assert ssl_demo_folder(ssl, init="x.ckpt") == (tmp_path / "demo-ssl-2", [], "x.ckpt")
    folder, removed, init = ssl_demo_folder(ssl, overwrite=True)
    assert folder == ssl and init is None and ckpt.is_file()
    assert sorted(removed) == ["data", "init", "semi-seed0", "summary.json", "supervised-seed0"]


def test_demo_cli_says_where_it_writes(tmp_path, monkeypatch, capsys):
    import sagepose.demo

    runs = []
    monkeypatch.setattr(sagepose.demo, "run_demo", lambda out, **kw: runs.append(out))
    out = tmp_path / "demo"
    out.mkdir()
    (out / "metrics.json").write_text("{}")
    assert main(["demo", "--out", str(out)]) == 0
    assert f"{out} holds a previous demo: writing to {out}-2 (--overwrite to replace it)" in capsys.readouterr().out
    assert runs == [tmp_path / "demo-2"]
    assert main(["demo", "--out", str(out), "--overwrite"]) == 0 and runs[-1] == out
    assert "--overwrite: removed the previous demo's metrics.json" in capsys.readouterr().out
