"""sagepose.train.module: the supervised training step's targets and joint weights."""
from __future__ import annotations

import torch


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
