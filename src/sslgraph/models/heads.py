"""Projection heads (DINO's prototype head, a BatchNorm MLP for contrastive objectives) and the backbone + head
network that student and teacher share."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import weight_norm

from sslgraph.models.backbones import Backbone


class DINOHead(nn.Module):
    """MLP to a bottleneck, L2 normalisation, then a weight-normalised linear layer to ``out_dim`` logits.

    The last layer's weight is ``g * v / ||v||`` per output unit; ``g`` starts at 1 and, with
    ``norm_last_layer``, stays frozen there, so every prototype has unit norm and the logits are cosines.
    """

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        *,
        hidden_dim: int = 2048,
        bottleneck_dim: int = 256,
        nlayers: int = 3,
        norm_last_layer: bool = True,
    ) -> None:
        super().__init__()
        if nlayers < 1:
            raise ValueError(f"DINOHead: nlayers must be >= 1, got {nlayers}")
        dims = [in_dim] + [hidden_dim] * (nlayers - 1) + [bottleneck_dim]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            if i > 0:
                layers.append(nn.GELU())
            layers.append(nn.Linear(d_in, d_out))
        self.mlp = nn.Sequential(*layers)
        self.mlp.apply(_init_linear)

        self.last_layer = weight_norm(nn.Linear(bottleneck_dim, out_dim, bias=False), dim=0)
        magnitude = self.last_layer.parametrizations.weight.original0
        with torch.no_grad():
            magnitude.fill_(1.0)
        magnitude.requires_grad_(not norm_last_layer)

    def forward(self, x: Tensor) -> Tensor:
        x = F.normalize(self.mlp(x), dim=-1)
        return self.last_layer(x)


class ProjectionHead(nn.Module):
    """``Linear - BatchNorm - ReLU - Linear``: SimCLR's projector. The BatchNorm is what lets a contrastive loss
    train at a high learning rate from the first steps; the loss sees the output, the banks the backbone feature.
    """

    def __init__(self, in_dim: int, out_dim: int, *, hidden_dim: int = 512, batch_norm: bool = True) -> None:
        super().__init__()
        norm: nn.Module = nn.BatchNorm1d(hidden_dim) if batch_norm else nn.Identity()
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden_dim), norm, nn.ReLU(inplace=True),
                                 nn.Linear(hidden_dim, out_dim))

    def forward(self, x: Tensor) -> Tensor:
        return self.mlp(x)


def _init_linear(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        nn.init.zeros_(module.bias)


class SSLNetwork(nn.Module):
    """Backbone followed by head; returns both, since the banks store the feature and the loss uses the logits."""

    def __init__(self, backbone: Backbone, head: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        features = self.backbone(x)
        return features, self.head(features)
