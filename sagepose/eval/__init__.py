from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, make_results, oks_nms

__all__ = ["CocoKeypointMetrics", "evaluate_coco", "make_results", "oks_nms"]
