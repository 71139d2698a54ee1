"""DeepLabCut / lightning-pose labeled-data CSVs -> COCO keypoint json (sagepose.data.dlc, `sagepose import dlc`):
the real mirror-mouse CSV round trip through the reader, a multi-animal file, boxes, flip pairs, bad input."""
from __future__ import annotations

import csv
import json
import os
import shutil

import cv2
import numpy as np
import pytest
from conftest import REALDATA

from sagepose.cli.main import main
from sagepose.data.coco import load_coco
from sagepose.data.dlc import csv_to_coco, dlc_to_coco, write_coco
from sagepose.errors import DataError
from sagepose.keypoints import load_schema

MOUSE = REALDATA / "mirror-mouse"
MOUSE_CSV = MOUSE / "CollectedData.csv"
SHIPPED = sorted((MOUSE / "labeled-data").glob("*.png"))  # the first 6 frames' images


def _csv_counts(path):
    """Per data row: (image path, number of labeled bodyparts), read with the csv module alone."""
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    coords = rows[2]
    xs = [i for i, c in enumerate(coords) if c == "x"]
    return [(r[0], sum(bool(r[i].strip()) for i in xs)) for r in rows[3:]]


@pytest.fixture
def mouse_project(tmp_path):
    """The real CSV in a folder whose labeled-data/ holds an image for each of its 90 rows (the 6 shipped images,
    repeated: the import reads only their sizes)."""
    shutil.copy(MOUSE_CSV, tmp_path / "CollectedData.csv")
    (tmp_path / "labeled-data").mkdir()
    for i, (rel, _) in enumerate(_csv_counts(MOUSE_CSV)):
        os.symlink(SHIPPED[i % len(SHIPPED)], tmp_path / rel)
    return tmp_path


def test_real_mirror_mouse_csv_round_trips_through_the_reader(mouse_project):
    coco = csv_to_coco(mouse_project / "CollectedData.csv")
    counts = _csv_counts(MOUSE_CSV)
    assert len(counts) == 90 and len(coco["images"]) == 90 and len(coco["annotations"]) == 90
    h, w = cv2.imread(str(SHIPPED[0])).shape[:2]
    assert (w, h) == (396, 406) and {(i["width"], i["height"]) for i in coco["images"]} == {(396, 406)}
    assert [i["file_name"] for i in coco["images"]] == [rel for rel, _ in counts]  # referenced, as the CSV names
    cat = coco["categories"][0]
    assert cat["name"] == mouse_project.name and len(cat["keypoints"]) == 17 and cat["skeleton"] == []
    out = write_coco(coco, mouse_project / "labels.json")
    schema = load_schema(out)
    assert schema.num_keypoints == 17 and not schema.has_sigmas and len(schema.flip_pairs) == 4
    records = load_coco(out, schema=schema)  # images beside the json: the default image root
    assert len(records) == 90
    assert [int(r.visible.sum()) for r in records] == [n for _, n in counts]
    assert [r.num_keypoints for r in records] == [a["num_keypoints"] for a in coco["annotations"]]
    # the first row's values, as the file writes them (its tailBase_top / tailMid_top cells are empty)
    first = open(MOUSE_CSV).read().splitlines()[3].split(",")
    assert records[0].keypoints[1].tolist() == pytest.approx([253.5, 101.900392541708])
    assert first[9:13] == ["", "", "", ""] and records[0].visible[4:6].tolist() == [0, 0]
    a = coco["annotations"][0]
    assert a["bbox"] == [0.0, 0.0, 396.0, 406.0] and a["area"] == 396.0 * 406.0 and a["iscrowd"] == 0


def test_missing_images_are_an_error_naming_them_or_skipped_and_counted(tmp_path):
    with pytest.raises(DataError) as e:  # the shipped folder holds only the first 6 images
        csv_to_coco(MOUSE_CSV)
    msg = str(e.value)
    assert msg.startswith(f"{MOUSE_CSV}: line 10: image ") and "labeled-data/img07.png: missing" in msg
    assert "\n" not in msg
    with pytest.warns(UserWarning, match=r"skipped 84 of 90 frames .*labeled-data/img07.png"):
        coco = csv_to_coco(MOUSE_CSV, skip_missing=True)
    assert len(coco["images"]) == 6 and coco["info"]["skipped_missing_images"] == 84


def test_labels_box_is_the_padded_extent_clipped_to_the_image(mouse_project):
    coco = csv_to_coco(mouse_project / "CollectedData.csv", box="labels", box_pad=1.5)
    a, img = coco["annotations"][0], coco["images"][0]
    xy = np.reshape(a["keypoints"], (-1, 3))
    xy = xy[xy[:, 2] > 0, :2]
    (x1, y1), (x2, y2) = xy.min(0), xy.max(0)
    cx, cy, hw, hh = (x1 + x2) / 2, (y1 + y2) / 2, 0.75 * (x2 - x1), 0.75 * (y2 - y1)
    want = [max(cx - hw, 0), max(cy - hh, 0)]
    want += [min(cx + hw, img["width"]) - want[0], min(cy + hh, img["height"]) - want[1]]
    assert a["bbox"] == pytest.approx(want) and a["area"] == pytest.approx(want[2] * want[3])


def _write_multi(path, rows, index_columns=3):
    """A DLC 2.2+ multi-animal CSV: 2 mice (snout, leftear, rightear) and the 'single' individual (a marker);
    the image path split over 3 index columns."""
    cols = [(ind, bp) for ind in ("mouse1", "mouse2") for bp in ("snout", "leftear", "rightear")]
    cols.append(("single", "marker"))
    pad = [""] * (index_columns - 1)
    header = [["scorer", *pad, *["me"] * 14], ["individuals", *pad, *[c[0] for c in cols for _ in "xy"]],
              ["bodyparts", *pad, *[c[1] for c in cols for _ in "xy"]], ["coords", *pad, *["x", "y"] * 7]]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(header + rows)


def test_multi_animal_csv_one_annotation_per_labeled_individual(tmp_path):
    (tmp_path / "labeled-data" / "vid1").mkdir(parents=True)
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(tmp_path / "labeled-data" / "vid1" / name), np.zeros((50, 80, 3), np.uint8))
    rows = [["labeled-data", "vid1", "a.png", 10, 10, 20, 12, 14, 30, "", "", "", "", "", "", 5, 5],
            ["labeled-data", "vid1", "b.png", 70, 40, "", "", "", "", 2, 2, 3, 3, "nan", "nan", "", ""]]
    _write_multi(tmp_path / "CollectedData_me.csv", rows)
    with pytest.warns(UserWarning, match="dropped DeepLabCut's 'single' individual .*marker"):
        coco = csv_to_coco(tmp_path / "CollectedData_me.csv")
    assert coco["categories"][0]["keypoints"] == ["snout", "leftear", "rightear"]
    assert coco["categories"][0]["flip_pairs"] == [["leftear", "rightear"]]
    assert [i["file_name"] for i in coco["images"]] == ["labeled-data/vid1/a.png", "labeled-data/vid1/b.png"]
    anns = coco["annotations"]  # mouse2 unlabeled in a.png; b.png: mouse1 one joint, mouse2 two
    assert [(a["image_id"], a["individual"], a["num_keypoints"]) for a in anns] == [
        (1, "mouse1", 3), (2, "mouse1", 1), (2, "mouse2", 2)]
    assert anns[0]["keypoints"] == [10, 10, 2, 20, 12, 2, 14, 30, 2]
    assert anns[2]["keypoints"] == [2, 2, 2, 3, 3, 2, 0, 0, 0]
    # boxes: the labels' extent x 1.25 about its centre, clipped: mouse1 in a.png spans x 10..20, y 10..30
    assert anns[0]["bbox"] == pytest.approx([8.75, 7.5, 12.5, 25.0]) and anns[0]["area"] == pytest.approx(312.5)
    # one joint: a 1 px square before padding, 70 +- 0.625; mouse2 in b.png: 2..3 (x 1.25: 1.875 .. 3.125)
    assert anns[1]["bbox"] == pytest.approx([69.375, 39.375, 1.25, 1.25])
    assert anns[2]["bbox"] == pytest.approx([1.875, 1.875, 1.25, 1.25])


def test_explicit_flip_pairs_and_skeleton_by_name(tmp_path, mouse_project):
    coco = csv_to_coco(mouse_project / "CollectedData.csv", flip_pairs="paw1LH_top:paw4RH_top",
                       skeleton="nose_top-tailBase_top,tailBase_top-tailMid_top")
    cat = coco["categories"][0]
    assert cat["flip_pairs"] == [["paw1LH_top", "paw4RH_top"]]
    assert cat["skeleton"] == [[7, 5], [5, 6]]  # 1-based, COCO's convention
    write_coco(coco, tmp_path / "m.json")
    schema = load_schema(tmp_path / "m.json")
    assert schema.skeleton == ((6, 4), (4, 5)) and schema.flip_pairs == ((0, 3),)
    assert csv_to_coco(mouse_project / "CollectedData.csv", flip_pairs="")["categories"][0]["flip_pairs"] == []
    with pytest.raises(DataError, match="CollectedData.csv: flip pair 'paw1:paw4'"):
        csv_to_coco(mouse_project / "CollectedData.csv", flip_pairs="paw1:paw4")


def _mouse_rows():
    with open(MOUSE_CSV, newline="") as f:
        return list(csv.reader(f))


@pytest.mark.parametrize("edit, match", [
    (lambda r: r.__setitem__(0, ["scorers", *r[0][1:]]), "not a DeepLabCut labeled-data CSV: expected header rows"),
    (lambda r: r.__setitem__(2, [*r[2][:-1], "z"]), "column 35: coords 'z'"),
    (lambda r: r.__setitem__(2, [*r[2][:-1], "x"]), "a second 'x' column for bodypart 'obsLow_bot'"),
    (lambda r: [row.pop() for row in r], "bodypart 'obsLow_bot' has no y column \\(odd columns\\)"),
    (lambda r: r[3].pop(), "line 4: 34 cells, the header has 35"),
    (lambda r: r[4].__setitem__(1, "abc"), "line 5, column 2 \\(x\\): 'abc' is not a number"),
    (lambda r: r[4].__setitem__(2, ""), "line 5: bodypart 'paw1LH_top' has an x or a y, not both"),
    (lambda r: r[4].__setitem__(0, r[3][0]), "line 5: image labeled-data/img01.png is already labeled on line 4"),
])
def test_bad_csvs_are_one_line_naming_the_file(tmp_path, edit, match):
    rows = _mouse_rows()
    edit(rows)
    path = tmp_path / "CollectedData.csv"
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows(rows)
    shutil.copytree(MOUSE / "labeled-data", tmp_path / "labeled-data")
    with pytest.raises(DataError, match=match) as e:
        csv_to_coco(path, skip_missing=True)
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_missing_csv_and_bad_options():
    with pytest.raises(DataError, match="nope.csv: labeled-data CSV not found"):
        csv_to_coco("nope.csv")
    with pytest.raises(ValueError, match="box must be one of"):
        csv_to_coco(MOUSE_CSV, box="tight")
    with pytest.raises(ValueError, match="box_pad must be a positive factor"):
        csv_to_coco(MOUSE_CSV, box_pad=0)


def test_cli_import_dlc(tmp_path, capsys):
    out = tmp_path / "mouse.json"
    with pytest.warns(UserWarning, match="skipped 84 of 90"):
        rc = main(["import", "dlc", str(MOUSE_CSV), "--out", str(out), "--skip-missing", "--box", "labels",
                   "--skeleton", "nose_top-tailBase_top"])
    assert rc == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: 6 frames, 6 annotations, 17 keypoints, 4 flip pairs (paw1LH_top:paw4RH_top")
    assert "84 skipped" in line and f"images under {MOUSE}, their paths relative to {tmp_path}" in line
    data = json.loads(out.read_text())
    assert data["categories"][0]["skeleton"] == [[7, 5]] and data["annotations"][0]["bbox"][2] < 396
    assert os.path.normpath(tmp_path / data["images"][0]["file_name"]) == str(MOUSE / "labeled-data/img01.png")
    records = load_coco(out, schema=load_schema(out))  # no data.image_root needed: relative to the json
    assert len(records) == 6 and all(os.path.isfile(r.image_path) for r in records)
    assert main(["import", "dlc", str(MOUSE_CSV), "--out", str(out)]) == 1  # the labels written above are kept
    err = capsys.readouterr().err.strip()
    assert err == f"sagepose: error: {out} exists; pass --overwrite to replace it, or choose another path"
    assert main(["import", "dlc", str(MOUSE_CSV), "--out", str(out), "--overwrite"]) == 1  # images 7-90 missing
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sagepose: error: {MOUSE_CSV}: line 10: image ") and "\n" not in err
    with pytest.raises(SystemExit):
        main(["import", "csv", str(MOUSE_CSV), "--out", str(out)])  # the only format is dlc


# ---- DeepLabCut 2.2 projects: labeled-data/<video>/CollectedData_<scorer>.csv, several CSVs, image roots ----------

def _dlc_project(root, videos=("vidA", "vidB"), frames=2, bodyparts=("snout", "leftear", "rightear")):
    """A DLC 2.2 project: per video, ``frames`` 40x30 images and a single-animal CSV whose rows name
    ``labeled-data/<video>/imgN.png`` over 3 index columns; returns the CSV paths."""
    csvs = []
    for v, video in enumerate(videos):
        folder = root / "labeled-data" / video
        folder.mkdir(parents=True)
        rows = [["scorer", "", "", *["me"] * (2 * len(bodyparts))],
                ["bodyparts", "", "", *[bp for bp in bodyparts for _ in "xy"]],
                ["coords", "", "", *["x", "y"] * len(bodyparts)]]
        for i in range(frames):
            cv2.imwrite(str(folder / f"img{i}.png"), np.zeros((30, 40, 3), np.uint8))
            rows.append(["labeled-data", video, f"img{i}.png", *[5 + v + i + k for k in range(2 * len(bodyparts))]])
        csvs.append(folder / "CollectedData_me.csv")
        with open(csvs[-1], "w", newline="") as f:
            csv.writer(f).writerows(rows)
    return csvs


def test_dlc22_csv_in_its_video_folder_infers_the_project_as_image_root(tmp_path):
    csv_a, _ = _dlc_project(tmp_path / "proj")
    coco = csv_to_coco(csv_a)  # its rows name labeled-data/vidA/img0.png: relative to the project, two folders up
    assert coco["info"]["image_root"] == str(tmp_path / "proj")
    assert [i["file_name"] for i in coco["images"]] == ["labeled-data/vidA/img0.png", "labeled-data/vidA/img1.png"]
    assert coco["categories"][0]["name"] == "proj"
    (tmp_path / "proj" / "labeled-data" / "vidA" / "img1.png").unlink()
    with pytest.raises(DataError) as e:  # a missing image names the folders tried and the option
        csv_to_coco(csv_a)
    msg = str(e.value)
    assert msg.startswith(f"{csv_a}: line 5: image ") and "labeled-data/vidA/img1.png: missing" in msg
    assert f"looked in {csv_a.parent}, {csv_a.parent.parent}, {tmp_path / 'proj'}" in msg and "--image-root" in msg


def test_import_dlc_project_folder_with_two_videos_resolves_from_another_cwd(tmp_path, monkeypatch, capsys):
    _dlc_project(tmp_path / "proj")
    out = tmp_path / "work" / "labels.json"
    assert main(["import", "dlc", str(tmp_path / "proj"), "--out", str(out)]) == 0
    line = capsys.readouterr().out.strip()
    assert line.startswith(f"{out}: 4 frames from 2 CSVs, 4 annotations, 3 keypoints, 1 flip pairs (leftear:rightear)")
    data = json.loads(out.read_text())
    assert [i["file_name"] for i in data["images"]] == [f"../proj/labeled-data/{v}/img{i}.png"
                                                        for v in ("vidA", "vidB") for i in range(2)]
    assert [i["id"] for i in data["images"]] == [1, 2, 3, 4] and [a["image_id"] for a in data["annotations"]] == [
        1, 2, 3, 4]
    assert data["categories"][0]["name"] == "proj" and data["info"]["image_root"] == str(out.parent)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # training from another folder, no data.image_root
    records = load_coco(os.path.relpath(out), schema=load_schema(out))
    assert len(records) == 4 and all(os.path.isfile(r.image_path) for r in records)
    assert records[2].keypoints[0].tolist() == [6.0, 7.0]  # vidB's first frame


def test_import_two_csvs_at_once_merged_and_checked(tmp_path, capsys):
    csv_a, csv_b = _dlc_project(tmp_path / "proj")
    out = tmp_path / "proj" / "labels.json"
    assert main(["import", "dlc", str(csv_a), str(csv_b), "--out", str(out)]) == 0
    data = json.loads(out.read_text())
    assert [i["file_name"] for i in data["images"]] == [f"labeled-data/{v}/img{i}.png"
                                                        for v in ("vidA", "vidB") for i in range(2)]
    assert data["info"]["sources"] == [str(csv_a), str(csv_b)] and data["info"]["frames"] == 4
    assert len(load_coco(out, schema=load_schema(out))) == 4
    with pytest.raises(DataError, match=r"vidA/CollectedData_me.csv: image .*labeled-data/vidA/img0.png is already "
                                        r"labeled in .*vidA/CollectedData_me.csv"):
        dlc_to_coco([csv_a, csv_a])
    other = _dlc_project(tmp_path / "other", videos=("vidC",), bodyparts=("snout", "tail"))[0]
    assert main(["import", "dlc", str(csv_a), str(other), "--out", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"sagepose: error: {other}: bodyparts ['snout', 'tail'] differ from {csv_a}'s") and \
        "\n" not in err
    with pytest.raises(DataError, match=r"empty: no labeled-data CSV in this folder"):
        (tmp_path / "empty").mkdir()
        dlc_to_coco([tmp_path / "empty"])
