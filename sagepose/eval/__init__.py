from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, instance_scores, make_results, oks_nms
from sagepose.eval.crowdpose import crowd_split, evaluate_aic, evaluate_crowdpose
from sagepose.eval.keypoint_metrics import auc, epe, pck, pckh
from sagepose.eval.official import official_ap
from sagepose.eval.paired import PairedGap, paired_gap
from sagepose.eval.pairing import pair_with_labels
from sagepose.eval.pixel import box_size, pixel_metrics
from sagepose.geometry import mpii_head_size  # PCKh's unit: box geometry, which data/ reads too

__all__ = ["CocoKeypointMetrics", "PairedGap", "auc", "box_size", "crowd_split", "epe", "evaluate_aic", "evaluate_coco",
           "evaluate_crowdpose", "instance_scores", "make_results",
           "mpii_head_size", "official_ap", "oks_nms", "pair_with_labels", "paired_gap", "pck", "pckh", "pixel_metrics"]
