"""The translator network, and applying it to a results list."""
from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sagepose.keypoint_maps import KeypointMap, MappingError, keypoint_map
from sagepose.keypoints import KeypointSchema
from sagepose.translate.results import flat_keypoints, parse_results, person_frames


def _mlp(inputs: int, hidden: int, layers: int, outputs: int, zero_last: bool) -> nn.Sequential:
    dims = [inputs] + [hidden] * layers
    blocks = []
    for a, b in zip(dims[:-1], dims[1:]):
        blocks += [nn.Linear(a, b), nn.GELU()]
    last = nn.Linear(hidden, outputs)
    if zero_last:
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)
    return nn.Sequential(*blocks, last)


class Translator(nn.Module):
    """Source keypoints (N, K_s, 2) in the normalised frame and their scores (N, K_s) -> target keypoints
    (N, K_t, 2) in the same frame and labeled logits (N, K_t). ``kmap``: the fixed map the residual sits on (one
    giving no joint makes every joint free). Two MLPs of ``layers`` hidden layers of ``hidden`` units, one for the
    coordinates and one for the flags: on one shared trunk, learning a flag (often a sharp rule on one score) held
    the coordinates back (on the analytic test, 60 epochs left the head top 10x further off)."""

    def __init__(self, kmap: KeypointMap, hidden: int = 256, layers: int = 3, refine_covered: bool = True):
        super().__init__()
        # (K_t, K_s): each joint the map does not give as an affine combination of the source joints (fit_affine_base;
        # zero rows: the joint starts at the frame's centre)
        self.register_buffer("base_weights", torch.zeros(kmap.target.num_keypoints, kmap.source.num_keypoints))
        if hidden < 1 or layers < 1:
            raise ValueError(f"translator: hidden and layers must be >= 1, got hidden={hidden}, layers={layers}")
        self.kmap = kmap
        self.hidden, self.layers, self.refine_covered = hidden, layers, refine_covered
        self.register_buffer("covered", torch.as_tensor(kmap.covered)[:, None], persistent=False)
        self.num_target = kmap.target.num_keypoints
        inputs = 3 * kmap.source.num_keypoints
        # the residual starts at 0 (an untrained translator places joints as the fixed map does); the flags' last
        # layer keeps its random init: zeroed, it starves the layers below of gradient (on the analytic test, a
        # rule on one score was still unlearned after 60 epochs, learned in 60 with the random init)
        self.coords = _mlp(inputs, hidden, layers, 2 * self.num_target, zero_last=True)
        self.flags = _mlp(inputs, hidden, layers, self.num_target, zero_last=False)

    def forward(self, keypoints: torch.Tensor, scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        base, _ = self.kmap.apply_torch(keypoints, scores)  # 0 where the map gives nothing
        base = base + torch.einsum("ts,nsc->ntc", self.base_weights.to(keypoints.dtype), keypoints)
        x = torch.cat([keypoints.flatten(1), scores], 1)
        xy = base + self.coords(x).view(-1, self.num_target, 2)
        return (xy if self.refine_covered else torch.where(self.covered, base, xy)), self.flags(x)


def residual_map(source: KeypointSchema, target: KeypointSchema, midpoints: bool) -> KeypointMap:
    """The fixed map a translator's residual sits on; where nothing corresponds, one giving no joint (every target
    joint is then learned freely)."""
    try:
        return keypoint_map(source, target, midpoints=midpoints)
    except MappingError:
        return KeypointMap(source, target, ((),) * target.num_keypoints)


def translate_results(model: Translator, results: list[dict], where: str = "results") -> list[dict]:
    """COCO results in the translator's source schema -> its target schema. Coordinates: the network's, back in
    image pixels. A joint's score is its support's score x sigmoid(its logit): the support is the fixed map's score
    for the joint (the source joint's, the smaller of a midpoint's two) where the map gives it, else the instance's
    mean keypoint score -- so an occluded source wrist stays a doubtful target wrist, and a joint the network deems
    unlabeled scores low. The instance ``score`` and every other field are kept."""
    kp, sc, boxes = parse_results(results, model.kmap.source, where)
    if not results:
        return []
    centres, sizes = person_frames(kp, sc, boxes)
    norm = (kp - centres[:, None]) / sizes[:, None, None]
    device = next(model.parameters()).device
    model.eval()
    xy, logits = [], []
    with torch.no_grad():
        for s in range(0, len(results), 4096):
            a, b = (torch.as_tensor(x[s:s + 4096], dtype=torch.float32, device=device) for x in (norm, sc))
            out_xy, out_logit = model(a, b)
            xy.append(out_xy.double().cpu().numpy())
            logits.append(out_logit.double().cpu().numpy())
    xy = np.concatenate(xy) * sizes[:, None, None] + centres[:, None]
    prob = 1.0 / (1.0 + np.exp(-np.concatenate(logits)))
    _, mapped = model.kmap.apply(kp, sc)
    support = np.where(model.kmap.covered, mapped, sc.mean(1, keepdims=True))
    scores = support * prob
    return [{**r, "keypoints": [round(v, 3) for v in flat_keypoints(x, s)]} for r, x, s in zip(results, xy, scores)]
