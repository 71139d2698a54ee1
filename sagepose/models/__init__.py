"""Models: ViT backbone, heatmap heads, the top-down estimator, checkpoint import, the model zoo."""
from sagepose.models.checkpoint import from_mmpose, from_vitpose, load_checkpoint
from sagepose.models.estimator import Prediction, TopDownEstimator
from sagepose.models.heads import HeatmapHead
from sagepose.models.vit import VIT_SIZES, VisionTransformer, vit
from sagepose.models.zoo import MODELS, build_model, build_model_from_config

__all__ = ["MODELS", "VIT_SIZES", "HeatmapHead", "Prediction", "TopDownEstimator", "VisionTransformer",
           "build_model", "build_model_from_config", "from_mmpose", "from_vitpose", "load_checkpoint", "vit"]
