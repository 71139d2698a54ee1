from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, instance_scores, make_results, oks_nms
from sagepose.eval.pixel import box_size, pixel_metrics

__all__ = ["CocoKeypointMetrics", "box_size", "evaluate_coco", "instance_scores", "make_results", "oks_nms",
           "pixel_metrics"]
