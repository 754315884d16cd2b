"""Image splits, uint8 pretraining batches, batched on-device views, and the per-image transforms."""

from sslgraph.data.batch_aug import BatchAugment, ViewRecipe, view_recipes
from sslgraph.data.batches import PretrainBatches
from sslgraph.data.datasets import IMAGE_EXTENSIONS, DataError, ImageDataset, build_dataset, decode_image
from sslgraph.data.evaluation import EvalDataset
from sslgraph.data.transforms import TwoCropTransform, eval_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "BatchAugment",
    "DataError",
    "EvalDataset",
    "ImageDataset",
    "PretrainBatches",
    "TwoCropTransform",
    "ViewRecipe",
    "build_dataset",
    "decode_image",
    "eval_transform",
    "view_recipes",
]
