"""Models: ViT / HRNet / HRFormer backbones, heatmap heads, the top-down estimator, checkpoint import, the model zoo."""
from sagepose.models.checkpoint import from_mmpose, from_vitpose, load_checkpoint
from sagepose.models.estimator import Prediction, TopDownEstimator
from sagepose.models.fusion_head import FusionHead
from sagepose.models.heads import HeatmapHead
from sagepose.models.hrformer import HRFORMER_SIZES, HRFormer, hrformer
from sagepose.models.hrnet import HRNET_SIZES, HRNet, hrnet
from sagepose.models.inference import InferenceMode
from sagepose.models.vit import VIT_SIZES, VisionTransformer, vit
from sagepose.models.zoo import MODELS, build_model, build_model_from_config

__all__ = ["HRFORMER_SIZES", "HRNET_SIZES", "MODELS", "VIT_SIZES", "FusionHead", "HRFormer", "HRNet", "HeatmapHead",
           "InferenceMode", "Prediction", "TopDownEstimator", "VisionTransformer", "build_model",
           "build_model_from_config", "from_mmpose", "from_vitpose", "hrformer", "hrnet", "load_checkpoint", "vit"]
