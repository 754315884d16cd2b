"""Networks: backbones (ViT, ResNet), the DINO head, and the backbone + head pair."""

from sslgraph.models.backbones import BACKBONES, Backbone, ResNetBackbone, ViTBackbone, build_backbone
from sslgraph.models.heads import DINOHead, SSLNetwork

__all__ = ["BACKBONES", "Backbone", "DINOHead", "ResNetBackbone", "SSLNetwork", "ViTBackbone", "build_backbone"]
