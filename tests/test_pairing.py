"""eval.pair_with_labels: results matched to the labeled people they predict."""
import json

import numpy as np

from sagepose.data import load_coco
from sagepose.eval import pair_with_labels


def _labels(tmp_path, people):
    anns = []
    for i, (image_id, kp) in enumerate(people):
        x0, y0 = kp.min(0)
        x1, y1 = kp.max(0)
        flat = np.concatenate([kp, np.full((len(kp), 1), 2.0)], 1).reshape(-1).tolist()
        anns.append({"id": i + 1, "image_id": image_id, "category_id": 1, "bbox": [x0, y0, x1 - x0, y1 - y0],
                     "area": float((x1 - x0) * (y1 - y0)), "iscrowd": 0, "num_keypoints": len(kp), "keypoints": flat})
    data = {"images": [{"id": i, "file_name": f"{i}.jpg", "width": 400, "height": 400} for i in (1, 2)],
            "annotations": anns, "categories": [{"id": 1, "name": "person", "keypoints": [
                "nose", "left_eye", "right_eye", "left_ear", "right_ear", "left_shoulder", "right_shoulder",
                "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hip", "right_hip", "left_knee",
                "right_knee", "left_ankle", "right_ankle"], "skeleton": []}]}
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_each_label_gets_the_prediction_on_its_person(tmp_path):
    rng = np.random.default_rng(0)
    people = [(1, rng.uniform(20, 120, (17, 2))), (1, rng.uniform(200, 300, (17, 2))),
              (2, rng.uniform(50, 150, (17, 2)))]
    records = load_coco(_labels(tmp_path, people), mode="val")
    results = []
    for image_id, kp in reversed(people):  # out of order, with noise, plus a stray prediction and another image's
        noisy = kp + rng.normal(0, 2, kp.shape)
        results.append({"image_id": image_id, "category_id": 1, "score": 0.9,
                        "keypoints": np.concatenate([noisy, np.ones((17, 1))], 1).reshape(-1).tolist()})
    stray = rng.uniform(330, 390, (17, 2))
    results.append({"image_id": 1, "category_id": 1, "score": 0.5,
                    "keypoints": np.concatenate([stray, np.ones((17, 1))], 1).reshape(-1).tolist()})
    results.append({"image_id": 7, "category_id": 1, "score": 0.5, "keypoints": [0.0] * 51})
    p = pair_with_labels(results, records)
    assert p["record"].tolist() == [0, 1, 2]
    for j, (_, kp) in enumerate(people):
        assert np.abs(p["pred"][j] - kp).max() < 10  # its own person's prediction, not the stray one
        np.testing.assert_allclose(p["gt"][j], kp, atol=1e-3)
    only = pair_with_labels(results[:1], records)  # image 2's one prediction: the other labels stay unpaired
    assert only["record"].tolist() == [2]
