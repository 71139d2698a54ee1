"""The multi-scale test (``model.test_scales``): each scale's heatmaps mapped into the base box's frame, checked on
an analytic "network" that reads its heatmaps off the crop, for both codec families' pixel conventions."""
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sagepose.codecs import build_codec
from sagepose.config import ConfigError, load_config
from sagepose.keypoints import generic_schema, load_schema
from sagepose.models import build_model, build_model_from_config
from sagepose.models.estimator import TopDownPredictor, check_test_scales

BLOB = (123.4, 187.6)  # the image point the analytic network finds


class ReadOff(TopDownPredictor):
    """A perfect network: each heatmap pixel is the crop's brightness at the input point the codec maps that pixel
    to (UDP: ``j (w - 1) / (hw - 1)``; MSRA: ``j w / hw``), so its heatmaps peak where the image's blob is."""

    def __init__(self, codec: str, scales):
        w, h = 96, 128
        extra = {"unbiased": True} if codec == "MSRAHeatmap" else {}  # DARK: sub-pixel, unlike the quarter shift
        self.codec = build_codec(dict(type=codec, input_size=(w, h), heatmap_size=(24, 32), sigma=2.0, **extra))
        # flip test with UDP, which mirrors exactly; MSRA's mirrored heatmap is 3/4 of a heatmap pixel off, and
        # MMPose's one-pixel shift back leaves a quarter (~1 image px here): that family's own bias, not the scales'
        self.schema, self.input_size, self.flip_test = generic_schema(1), (w, h), self.codec.udp
        self.shift_heatmap = self.codec.shift_heatmap_default
        self.mean, self.std = torch.zeros(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
        self.test_scales = check_test_scales(scales)
        self.device = torch.device("cpu")

    def network_heatmaps(self, x, dataset=None):
        (w, h), (hw, hh) = self.input_size, self.codec.heatmap_size
        kx, ky = ((w - 1) / (hw - 1), (h - 1) / (hh - 1)) if self.codec.udp else (w / hw, h / hh)
        ys, xs = torch.meshgrid(torch.arange(hh) * ky, torch.arange(hw) * kx, indexing="ij")
        grid = torch.stack([2 * xs / (w - 1) - 1, 2 * ys / (h - 1) - 1], -1).float()[None].expand(len(x), -1, -1, -1)
        return F.grid_sample(x[:, :1], grid, align_corners=True) / 255.0


def blob_image():
    yy, xx = np.mgrid[0:300, 0:300]
    img = 250 * np.exp(-((xx - BLOB[0]) ** 2 + (yy - BLOB[1]) ** 2) / (2 * 20.0 ** 2))
    return np.repeat(img[..., None], 3, -1).astype(np.uint8)


BOX = np.array([[60, 90, 200, 290]], np.float32)  # the blob off the box's centre: a wrong frame moves it


@pytest.mark.parametrize("codec", ["UDPHeatmap", "MSRAHeatmap"])
@pytest.mark.parametrize("scales", [(1.0,), (0.75,), (1.25,), (0.6,), (0.75, 1.0, 1.25)])
def test_every_scale_finds_the_blob_in_image_pixels(codec, scales):
    # measured: <= 0.11 px at any scale (the bilinear resample of a peak); a crop centre off by half a heatmap
    # pixel (the other family's convention) puts a single 0.75 / 1.25 scale ~1 px off
    got = ReadOff(codec, scales).predict(blob_image(), BOX).keypoints[0, 0]
    assert np.abs(got - np.array(BLOB)).max() <= 0.25


def test_a_scaled_crops_heatmaps_land_on_the_base_ones():
    net = ReadOff("UDPHeatmap", (1.0,))
    crops, _, _ = net.crop(blob_image(), BOX)
    base = net.predict_heatmaps(net.normalize(torch.from_numpy(crops)))
    for factor in (0.75, 1.25):
        crops, _, _ = net.crop(blob_image(), BOX, factor)
        mapped = net.to_base_frame(net.predict_heatmaps(net.normalize(torch.from_numpy(crops))), factor)
        reached = slice(4, 28), slice(3, 21)  # inside the smaller crop's reach
        assert (mapped - base)[..., reached[0], reached[1]].abs().max() <= 0.05 * base.max()  # measured 0.043
    small = net.to_base_frame(base, 0.5)  # a half-size box's crop covers the middle half of the base frame
    assert (small[..., :6, :] == 0).all() and (small[..., -6:, :] == 0).all()


def test_test_scales_in_the_config_reach_the_model():
    cfg = load_config("demo_tiny_vit", ["model.test_scales=[0.75, 1.0, 1.25]"])
    assert build_model_from_config(cfg.model).test_scales == (1.0, 0.75, 1.25)  # the base frame first
    assert build_model("vit-tiny").test_scales == (1.0,)
    for bad in ("[]", "[0.0, 1.0]", "[1.0, 5.0]"):
        with pytest.raises(ConfigError, match="model.test_scales"):
            load_config("demo_tiny_vit", [f"model.test_scales={bad}"])


def test_a_real_model_runs_three_scales_with_flip():
    torch.manual_seed(0)
    model = build_model("vit-tiny", test_scales=(0.75, 1.0, 1.25)).eval()
    image = (np.random.default_rng(0).random((200, 160, 3)) * 255).astype(np.uint8)
    pred = model.predict(image, np.array([[10, 10, 150, 190], [40, 20, 120, 180]], np.float32))
    assert pred.keypoints.shape == (2, 17, 2) and np.isfinite(pred.keypoints).all()
    fusion = build_model("vit-tiny-fusion", test_scales=(1.0, 1.25)).eval()
    with pytest.raises(ValueError, match="the fusion head, takes one scale"):
        fusion.predict(image, np.array([[10, 10, 150, 190]], np.float32))


@pytest.mark.parametrize("scales", [(1.0,), (0.75,), (0.75, 1.0, 1.25)])
def test_validation_runs_the_multi_scale_test_as_predict_does(tmp_path, scales):
    """``sagepose test`` / validation with ``model.test_scales``: the loader crops every scale, the module averages
    the heatmaps in the unscaled box's frame. With the read-off network in the module's model the results (image px,
    as written to predictions.json) find the blob as predict does."""
    import cv2
    import lightning as L

    from sagepose.train.loaders import build_loaders
    from sagepose.train.module import TopDownModule

    cv2.imwrite(str(tmp_path / "blob.png"), blob_image())
    x0, y0, x1, y1 = BOX[0].tolist()
    ann = dict(id=1, image_id=1, category_id=1, iscrowd=0, bbox=[x0, y0, x1 - x0, y1 - y0], area=float(140 * 200),
               num_keypoints=17, keypoints=[*BLOB, 2] * 17)
    (tmp_path / "val.json").write_text(json.dumps(dict(
        images=[dict(id=1, file_name="blob.png", width=300, height=300)], annotations=[ann],
        categories=[dict(id=1, name="person", keypoints=list(load_schema("coco").keypoints), skeleton=[])])))
    cfg = load_config("demo_tiny_vit", [f"data.val_json={tmp_path / 'val.json'}", "data.num_workers=0",
                                        f"model.test_scales={list(scales)}", "model.init_checkpoint=null"])
    module = TopDownModule(cfg)
    model = module.model
    read_off = ReadOff("UDPHeatmap", scales)  # the demo's codec: UDP, 96x128 -> 24x32
    assert (tuple(model.input_size), model.codec.udp) == (read_off.input_size, True)
    read_off.codec = model.codec  # the same decode (the demo's sigma and blur) on both paths
    model.mean.zero_()
    model.std.fill_(1.0)
    seen = []  # the crops the network is given, one batch per scale (flip test: the mirrored ones behind)
    model.network_heatmaps = lambda x, dataset=None: (seen.append(x[:1].clone()),
                                        read_off.network_heatmaps(x).expand(-1, 17, -1, -1).contiguous())[1]
    loader = build_loaders(cfg, model, train=False)["val"]
    assert ("img_scales" in next(iter(loader))) == (scales != (1.0,))
    L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
              enable_model_summary=False).validate(module, dataloaders=loader, verbose=False)
    got = np.reshape(module.last_predictions[0]["keypoints"], (17, 3))[:, :2]
    # each scale's crop is predict's crop of the box scaled about its centre (ordered as test_scales)
    assert len(seen) == len(scales)
    for crop, factor in zip(seen, read_off.test_scales):
        want = torch.from_numpy(read_off.crop(blob_image(), BOX, factor)[0]).permute(0, 3, 1, 2).float()
        assert (crop - want.flip(1)).abs().max() <= 1.0  # uint8 crops by two warps of one matrix
    assert np.abs(got - np.array(BLOB)).max() <= 0.25  # results are rounded to 1e-3 px
    assert np.allclose(got, read_off.predict(blob_image(), BOX).keypoints[0, 0], atol=2e-3)
