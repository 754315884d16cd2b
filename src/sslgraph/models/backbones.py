"""Backbones: randomly initialised ViTs (timm) and ResNets (torchvision) that map images to one vector each.

Every backbone exposes the same small interface (:class:`Backbone`), so the trainer, the memory banks and the
evaluation code never need to know which family they hold. Weights are always random: nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import Tensor, nn
from torchvision.models import resnet18, resnet50
from torchvision.models.resnet import BasicBlock, ResNet

from sslgraph.choices import RESNET18_FAMILY, BackboneName
from sslgraph.models.small_maps import use_small_map_convs


class Backbone(nn.Module):
    """An image encoder returning ``[B, embed_dim]`` features, plus the wider features a linear probe uses."""

    embed_dim: int

    def probe_features(self, x: Tensor, *, n_last_blocks: int = 4) -> Tensor:
        raise NotImplementedError

    def probe_dim(self, n_last_blocks: int = 4) -> int:
        raise NotImplementedError

    def probe_is_forward(self, n_last_blocks: int = 4) -> bool:
        """Whether :meth:`probe_features` returns the forward's own features, so an evaluation that already has
        those need not embed the images again."""
        return False


class ViTBackbone(Backbone):
    """A timm VisionTransformer whose feature is the class token after the final norm."""

    def __init__(
        self,
        *,
        embed_dim: int,
        depth: int,
        num_heads: int,
        image_size: int,
        patch_size: int,
        drop_path_rate: float,
    ) -> None:
        super().__init__()
        if patch_size <= 0 or image_size % patch_size != 0:
            raise ValueError(
                f"image_size={image_size} must be a positive multiple of patch_size={patch_size} for a ViT"
            )
        self.embed_dim = embed_dim
        self.depth = depth
        self.vit = VisionTransformer(
            img_size=image_size,
            patch_size=patch_size,
            embed_dim=embed_dim,
            depth=depth,
            num_heads=num_heads,
            num_classes=0,
            class_token=True,
            global_pool="token",
            drop_path_rate=drop_path_rate,
            dynamic_img_size=True,  # multi-crop: local crops are smaller; position embeddings are interpolated
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.vit(x)

    def probe_features(self, x: Tensor, *, n_last_blocks: int = 4) -> Tensor:
        """Class tokens of the last ``n_last_blocks`` blocks, each through the final norm, concatenated (DINO)."""
        self._check_blocks(n_last_blocks)
        pairs = self.vit.forward_intermediates(
            x,
            indices=n_last_blocks,
            return_prefix_tokens=True,
            norm=True,
            output_fmt="NLC",
            intermediates_only=True,
        )
        return torch.cat([prefix[:, 0] for _, prefix in pairs], dim=-1)

    def probe_dim(self, n_last_blocks: int = 4) -> int:
        self._check_blocks(n_last_blocks)
        return n_last_blocks * self.embed_dim

    def _check_blocks(self, n_last_blocks: int) -> None:
        if not 1 <= n_last_blocks <= self.depth:
            raise ValueError(f"n_last_blocks must be in [1, {self.depth}] for this ViT, got {n_last_blocks}")


class ResNetBackbone(Backbone):
    """A torchvision ResNet without its classifier: the globally average-pooled last feature map."""

    def __init__(self, *, net: ResNet, cifar_stem: bool) -> None:
        super().__init__()
        self.embed_dim = net.fc.in_features
        net.fc = nn.Identity()
        if cifar_stem:
            # Small images keep their resolution: a 3x3 stride-1 first convolution and no max-pool.
            net.conv1 = nn.Conv2d(3, net.conv1.out_channels, kernel_size=3, stride=1, padding=1, bias=False)
            nn.init.kaiming_normal_(net.conv1.weight, mode="fan_out", nonlinearity="relu")
            net.maxpool = nn.Identity()
        # Exact, and at 32 px with the ImageNet stem 1.55x faster forward+backward on a 2-core CPU.
        self.net = use_small_map_convs(net)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)

    def probe_features(self, x: Tensor, *, n_last_blocks: int = 4) -> Tensor:
        """The pooled feature itself; ``n_last_blocks`` only concerns ViTs."""
        return self.net(x)

    def probe_dim(self, n_last_blocks: int = 4) -> int:
        return self.embed_dim

    def probe_is_forward(self, n_last_blocks: int = 4) -> bool:
        return True


BackboneFactory = Callable[..., Backbone]


def _vit_factory(*, embed_dim: int, depth: int, num_heads: int) -> BackboneFactory:
    def build(*, image_size: int, patch_size: int = 16, drop_path_rate: float = 0.0,
              cifar_stem: bool = False, width: int | None = None) -> Backbone:
        """``cifar_stem`` and ``width`` only concern ResNets."""
        return ViTBackbone(embed_dim=embed_dim, depth=depth, num_heads=num_heads, image_size=image_size,
                           patch_size=patch_size, drop_path_rate=drop_path_rate)

    return build


def _resnet_factory(constructor: Callable[[], ResNet]) -> BackboneFactory:
    def build(*, image_size: int, patch_size: int = 16, drop_path_rate: float = 0.0,
              cifar_stem: bool = False, width: int | None = None) -> Backbone:
        """ResNets take any image size and have no patches or stochastic depth: ``cifar_stem`` applies, and
        ``width`` (first-stage channels of the ResNet-18 family; None: the architecture's own)."""
        net = constructor() if width is None else narrow_resnet18(base_width=width)
        return ResNetBackbone(net=net, cifar_stem=cifar_stem)

    return build


def narrow_resnet18(*, base_width: int = 16) -> ResNet:
    """ResNet-18's layout (four stages of two basic blocks) with ``base_width``..``8 * base_width`` channels.

    At a quarter of the width it costs about as much as ``vit_mini`` at 32 px, which makes it a convolutional
    choice for CPU runs; batch normalisation and locality make it learn quickly from few images. At half the
    width a training step costs about a quarter: where a CPU trains in float32, more steps of a narrower
    network learn more in the same minutes (README, "Learning on a short clock").
    """
    net = resnet18(weights=None)
    net.inplanes = base_width
    net.conv1 = nn.Conv2d(3, base_width, kernel_size=7, stride=2, padding=3, bias=False)
    net.bn1 = nn.BatchNorm2d(base_width)
    net.layer1 = net._make_layer(BasicBlock, base_width, 2)
    net.layer2 = net._make_layer(BasicBlock, 2 * base_width, 2, stride=2)
    net.layer3 = net._make_layer(BasicBlock, 4 * base_width, 2, stride=2)
    net.layer4 = net._make_layer(BasicBlock, 8 * base_width, 2, stride=2)
    net.fc = nn.Linear(8 * base_width, 1000)
    for module in net.modules():
        if isinstance(module, nn.Conv2d):
            nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
    return net


# Every factory takes the keyword arguments of :func:`build_backbone`. The names are the values of
# :data:`sslgraph.choices.BackboneName` (the config option); a test checks that the two match.
BACKBONES: dict[BackboneName, BackboneFactory] = {
    "vit_mini": _vit_factory(embed_dim=192, depth=4, num_heads=3),
    "vit_tiny": _vit_factory(embed_dim=192, depth=12, num_heads=3),
    "vit_small": _vit_factory(embed_dim=384, depth=12, num_heads=6),
    "vit_base": _vit_factory(embed_dim=768, depth=12, num_heads=12),
    "resnet_mini": _resnet_factory(narrow_resnet18),
    "resnet18": _resnet_factory(partial(resnet18, weights=None)),
    "resnet50": _resnet_factory(partial(resnet50, weights=None)),
}


def build_backbone(
    name: BackboneName,
    *,
    image_size: int,
    patch_size: int = 16,
    drop_path_rate: float = 0.0,
    cifar_stem: bool = False,
    width: int | None = None,
) -> Backbone:
    """A freshly initialised backbone from the :data:`BACKBONES` registry; ``width`` sets the first-stage channels
    of a ResNet-18 (each later stage doubles them; None: 64 for ``resnet18``, 16 for ``resnet_mini``)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; choose one of {', '.join(sorted(BACKBONES))}")
    if width is not None and name not in RESNET18_FAMILY:
        raise ValueError(f"width applies to the ResNet-18 family only ({', '.join(RESNET18_FAMILY)}), not {name}")
    return BACKBONES[name](image_size=image_size, patch_size=patch_size, drop_path_rate=drop_path_rate,
                           cifar_stem=cifar_stem, width=width)
