import pytest
import torch
from torch import nn

from sslgraph.models.backbones import BACKBONES, Backbone, ResNetBackbone, ViTBackbone, build_backbone

EXPECTED_DIMS = {
    "vit_mini": 192,
    "vit_tiny": 192,
    "vit_small": 384,
    "vit_base": 768,
    "resnet_mini": 128,
    "resnet18": 512,
    "resnet50": 2048,
}


def test_registry_holds_exactly_the_documented_names():
    assert set(BACKBONES) == set(EXPECTED_DIMS)


@pytest.mark.parametrize("name", sorted(EXPECTED_DIMS))
def test_every_backbone_maps_images_to_embed_dim_vectors(name):
    torch.manual_seed(0)
    backbone = build_backbone(name, image_size=32, patch_size=16, cifar_stem=True).eval()
    assert isinstance(backbone, Backbone)
    assert backbone.embed_dim == EXPECTED_DIMS[name]
    with torch.no_grad():
        out = backbone(torch.randn(2, 3, 32, 32))
    assert out.shape == (2, EXPECTED_DIMS[name])
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("patch_size", [8, 16])
def test_vit_patch_size_sets_the_token_count(patch_size):
    backbone = build_backbone("vit_mini", image_size=32, patch_size=patch_size)
    assert isinstance(backbone, ViTBackbone)
    assert backbone.vit.patch_embed.num_patches == (32 // patch_size) ** 2
    assert backbone(torch.randn(2, 3, 32, 32)).shape == (2, 192)


def test_vit_depth_and_heads_follow_the_registry():
    mini = build_backbone("vit_mini", image_size=32, patch_size=16)
    small = build_backbone("vit_small", image_size=32, patch_size=16)
    assert len(mini.vit.blocks) == 4 and mini.vit.blocks[0].attn.num_heads == 3
    assert len(small.vit.blocks) == 12 and small.vit.blocks[0].attn.num_heads == 6


def test_vit_drop_path_rate_reaches_the_blocks():
    backbone = build_backbone("vit_mini", image_size=32, patch_size=16, drop_path_rate=0.3)
    assert backbone.vit.blocks[-1].drop_path1.drop_prob == pytest.approx(0.3)


def test_vit_probe_features_are_the_normed_cls_tokens_of_the_last_blocks():
    torch.manual_seed(0)
    backbone = build_backbone("vit_mini", image_size=32, patch_size=8).eval()
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        probe = backbone.probe_features(x, n_last_blocks=2)
        vit = backbone.vit
        tokens = vit.norm_pre(vit._pos_embed(vit.patch_embed(x)))
        cls_per_block = []
        for block in vit.blocks:
            tokens = block(tokens)
            cls_per_block.append(vit.norm(tokens)[:, 0])
        reference = torch.cat(cls_per_block[-2:], dim=-1)
        final = backbone(x)
    assert backbone.probe_dim(2) == 2 * 192
    assert probe.shape == (3, 2 * 192)
    torch.testing.assert_close(probe, reference)
    torch.testing.assert_close(probe[:, 192:], final)


def test_vit_probe_rejects_more_blocks_than_the_depth():
    backbone = build_backbone("vit_mini", image_size=32, patch_size=16)
    with pytest.raises(ValueError, match="n_last_blocks"):
        backbone.probe_dim(5)
    with pytest.raises(ValueError, match="n_last_blocks"):
        backbone.probe_features(torch.randn(1, 3, 32, 32), n_last_blocks=0)


def test_resnet_probe_features_are_the_pooled_feature():
    torch.manual_seed(0)
    backbone = build_backbone("resnet18", image_size=32, cifar_stem=True).eval()
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(backbone.probe_features(x, n_last_blocks=4), backbone(x))
    assert backbone.probe_dim(4) == 512


def test_cifar_stem_replaces_conv1_and_removes_maxpool():
    plain = build_backbone("resnet18", image_size=32, cifar_stem=False)
    cifar = build_backbone("resnet18", image_size=32, cifar_stem=True)
    assert isinstance(plain, ResNetBackbone) and isinstance(cifar, ResNetBackbone)
    assert plain.net.conv1.kernel_size == (7, 7) and plain.net.conv1.stride == (2, 2)
    assert isinstance(plain.net.maxpool, nn.MaxPool2d)
    assert cifar.net.conv1.kernel_size == (3, 3) and cifar.net.conv1.stride == (1, 1)
    assert cifar.net.conv1.padding == (1, 1) and cifar.net.conv1.bias is None
    assert isinstance(cifar.net.maxpool, nn.Identity)
    assert isinstance(cifar.net.fc, nn.Identity)


def test_unknown_backbone_names_the_valid_choices():
    with pytest.raises(ValueError, match="vit_mini") as err:
        build_backbone("vit_huge", image_size=32)
    assert "resnet50" in str(err.value)


def test_vit_rejects_an_image_size_that_is_not_a_multiple_of_the_patch():
    with pytest.raises(ValueError, match="patch_size"):
        build_backbone("vit_mini", image_size=32, patch_size=6)


def test_width_sets_the_resnet18_family_channels():
    narrow = build_backbone("resnet18", image_size=32, width=32)
    mini = build_backbone("resnet_mini", image_size=32, width=8)
    # First stage `width` channels, each later one doubles: 32..256 and 8..64; the feature is the last stage's.
    assert narrow.embed_dim == 256 and narrow.net.conv1.out_channels == 32
    assert [narrow.net.layer1[0].conv1.out_channels, narrow.net.layer4[1].conv2.out_channels] == [32, 256]
    assert mini.embed_dim == 64 and mini.net.layer2[0].conv1.out_channels == 16
    with torch.no_grad():
        assert narrow.eval()(torch.randn(2, 3, 32, 32)).shape == (2, 256)
    # A quarter of ResNet-18's convolution weights at half the width (each is in x out x k x k).
    count = lambda m: sum(p.numel() for n, p in m.named_parameters() if p.dim() == 4)  # noqa: E731
    full = count(build_backbone("resnet18", image_size=32))
    assert count(narrow) == pytest.approx(full / 4, rel=1e-3)


@pytest.mark.parametrize("name", ["vit_mini", "resnet50"])
def test_width_is_refused_outside_the_resnet18_family(name):
    with pytest.raises(ValueError, match="ResNet-18 family"):
        build_backbone(name, image_size=32, width=32)
