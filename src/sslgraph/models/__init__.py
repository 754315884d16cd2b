"""Networks: backbones (ViT, ResNet), the DINO head, and the backbone + head pair of a configuration."""

from sslgraph.models.backbones import BACKBONES, Backbone, ResNetBackbone, ViTBackbone, build_backbone
from sslgraph.models.heads import DINOHead, SSLNetwork
from sslgraph.models.network import build_network

__all__ = ["BACKBONES", "Backbone", "DINOHead", "ResNetBackbone", "SSLNetwork", "ViTBackbone", "build_backbone",
           "build_network"]
