"""The student/teacher network of a configuration: backbone + the head its objective needs."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from sslgraph.config import Config, ModelConfig
from sslgraph.models.backbones import build_backbone
from sslgraph.models.heads import DINOHead, ProjectionHead, SSLNetwork


def _dino_head(embed_dim: int, m: ModelConfig) -> nn.Module:
    return DINOHead(embed_dim, m.out_dim, hidden_dim=m.head_hidden_dim, bottleneck_dim=m.head_bottleneck_dim,
                    norm_last_layer=m.norm_last_layer)


def _projection_head(embed_dim: int, m: ModelConfig) -> nn.Module:
    return ProjectionHead(embed_dim, m.out_dim, hidden_dim=m.head_hidden_dim, batch_norm=m.head_batch_norm)


#: The head each ``method.objective`` trains through.
HEADS: dict[str, Callable[[int, ModelConfig], nn.Module]] = {"dino": _dino_head, "simclr": _projection_head}


def build_network(cfg: Config, *, drop_path_rate: float) -> SSLNetwork:
    """A freshly initialised backbone + head as ``cfg.model`` describes (the teacher gets ``drop_path_rate=0``)."""
    backbone = build_backbone(cfg.model.backbone, image_size=cfg.data.image_size, patch_size=cfg.model.patch_size,
                              drop_path_rate=drop_path_rate, cifar_stem=cfg.model.cifar_stem,
                              width=cfg.model.width)
    return SSLNetwork(backbone, HEADS[cfg.method.objective](backbone.embed_dim, cfg.model))
