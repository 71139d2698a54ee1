"""Data: annotation and detection readers, the crop and its augmentation, the datasets, batched device augmentation."""
from sagepose.data.batch_aug import (
    CoarseDropoutConfig,
    PhotometricConfig,
    coarse_dropout,
    photometric,
)
from sagepose.data.coco import Record, load_coco
from sagepose.data.dataset import TopDownDataset, collate
from sagepose.data.detections import load_detections
from sagepose.data.mpii import MpiiSet, load_mpii, load_mpii_set
from sagepose.data.posetrack import load_posetrack18
from sagepose.data.transforms import CropAugment, Sample
from sagepose.data.unlabeled import UnlabeledDataset
from sagepose.data.unlabeled_sources import UnlabeledRecord, UnlabeledSource, load_unlabeled

__all__ = [
    "CoarseDropoutConfig", "CropAugment", "MpiiSet", "PhotometricConfig", "Record", "Sample", "TopDownDataset",
    "UnlabeledDataset", "UnlabeledRecord", "UnlabeledSource", "coarse_dropout", "collate", "load_coco",
    "load_detections", "load_mpii", "load_mpii_set", "load_posetrack18", "load_unlabeled", "photometric",
]
