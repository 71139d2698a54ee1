from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, instance_scores, make_results, oks_nms
from sagepose.eval.keypoint_metrics import auc, epe, mpii_head_size, pck, pckh
from sagepose.eval.pixel import box_size, pixel_metrics

__all__ = ["CocoKeypointMetrics", "auc", "box_size", "epe", "evaluate_coco", "instance_scores", "make_results",
           "mpii_head_size", "oks_nms", "pck", "pckh", "pixel_metrics"]
