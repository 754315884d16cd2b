"""Image splits, the pretraining and evaluation transforms, and the datasets the loops iterate over."""

from sslgraph.data.datasets import IMAGE_EXTENSIONS, DataError, ImageDataset, build_dataset, decode_image
from sslgraph.data.pretrain import EvalDataset, PretrainDataset, item_seed
from sslgraph.data.transforms import TwoCropTransform, eval_transform

__all__ = [
    "IMAGE_EXTENSIONS",
    "DataError",
    "EvalDataset",
    "ImageDataset",
    "PretrainDataset",
    "TwoCropTransform",
    "build_dataset",
    "decode_image",
    "eval_transform",
    "item_seed",
]
