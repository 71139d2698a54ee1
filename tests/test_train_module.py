"""sagepose.train.module: the supervised training step's targets and joint weights; what its checkpoints carry,
and that older ones still load and resume."""
from __future__ import annotations

from pathlib import Path

import torch

from sagepose.config import load_config
from sagepose.data.synth import generate_dataset


def test_loss_joint_weights_are_labelled_joints_in_the_map_times_schema_weights_when_asked():
    from sagepose.config import load_config
    from sagepose.keypoints import COCO17
    from sagepose.train.module import TopDownModule

    keypoints = torch.full((1, 17, 2), 40.0)  # inside the 96 x 128 crop
    keypoints[0, 3] = torch.tensor([-40.0, 50.0])  # far left of the crop: no target
    visible = torch.ones(1, 17)
    visible[0, 5] = 0.0  # not labelled
    batch = {"keypoints": keypoints, "visible": visible}
    expected = torch.ones(17)
    expected[[3, 5]] = 0.0
    for use, schema_weights in ((False, torch.ones(17)), (True, torch.tensor(COCO17.joint_weights))):
        cfg = load_config(None, ["model.name=vit-tiny", "model.arch={'depth': 1, 'embed_dim': 32, 'num_heads': 2}",
                                 f"trainer.use_joint_weights={use}"])
        _, weights = TopDownModule(cfg)._targets(batch)
        torch.testing.assert_close(weights[0], expected * schema_weights)


def test_a_checkpoint_whose_hyperparameters_hold_val_gt_json_still_resumes_and_tests(tmp_path):
    # TopDownModule used to take the val json as an argument and saved it in its hyper-parameters; it reads
    # data.val_json from the config now, and checkpoints written before must go on as they did
    import sagepose
    from sagepose.train.run import fit, test

    train = generate_dataset(tmp_path / "data", 8, seed=1, split="train", workers=1)
    val = generate_dataset(tmp_path / "data", 2, seed=2, split="val", workers=1)
    base = [f"data.train_json={train}", f"data.val_json={val}", f"trainer.out_dir={tmp_path / 'run'}",
            "model.name=vit-tiny", "model.arch={'depth': 1, 'embed_dim': 16, 'num_heads': 2, 'mlp_dim': 32}",
            "data.batch_size=4", "data.num_workers=0", "trainer.progress_bar=false", "trainer.accelerator=cpu",
            "trainer.val_every_epochs=1"]
    first = fit(load_config(None, [*base, "trainer.max_epochs=1"]))
    last = Path(first["last_checkpoint"])
    ckpt = torch.load(last, weights_only=False)
    assert "val_gt_json" not in ckpt["hyper_parameters"]  # read from the config now
    ckpt["hyper_parameters"]["val_gt_json"] = str(val)  # as TopDownModule saved it before
    torch.save(ckpt, last)

    cfg = load_config(None, [*base, "trainer.max_epochs=2"])
    metrics = test(cfg, str(last), tmp_path / "test")
    assert metrics["instances"] > 0 and "AP" in metrics
    assert sagepose.load(str(last)).schema.num_keypoints == 17
    resumed = fit(cfg, resume=True)
    assert resumed["resumed_from"] == str(last) and resumed["steps"] == 2 * first["steps"]
