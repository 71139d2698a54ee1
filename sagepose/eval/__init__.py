from sagepose.eval.coco import CocoKeypointMetrics, evaluate_coco, instance_scores, make_results, oks_nms

__all__ = ["CocoKeypointMetrics", "evaluate_coco", "instance_scores", "make_results", "oks_nms"]
