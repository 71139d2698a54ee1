from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, instance_scores, make_results, oks_nms
from sagepose.eval.keypoint_metrics import auc, epe, pck, pckh
from sagepose.eval.pixel import box_size, pixel_metrics

__all__ = ["CocoKeypointMetrics", "auc", "box_size", "epe", "evaluate_coco", "instance_scores", "make_results",
           "oks_nms", "pck", "pckh", "pixel_metrics"]
