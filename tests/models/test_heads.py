import copy

import pytest
import torch
from torch import nn

from sslgraph.models.backbones import build_backbone
from sslgraph.models.heads import DINOHead, SSLNetwork
from sslgraph.optim.params import param_groups


def _magnitude(head: DINOHead) -> torch.Tensor:
    return head.last_layer.parametrizations.weight.original0


def test_mlp_layout_and_init():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, nlayers=3)
    kinds = [type(m) for m in head.mlp]
    assert kinds == [nn.Linear, nn.GELU, nn.Linear, nn.GELU, nn.Linear]
    assert [m.out_features for m in head.mlp if isinstance(m, nn.Linear)] == [16, 16, 4]
    for layer in head.mlp:
        if isinstance(layer, nn.Linear):
            assert torch.all(layer.bias == 0)
    wide = DINOHead(256, 10, hidden_dim=256, bottleneck_dim=256, nlayers=2)
    assert wide.mlp[0].weight.std().item() == pytest.approx(0.02, rel=0.05)
    single = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, nlayers=1)
    assert [type(m) for m in single.mlp] == [nn.Linear]
    with pytest.raises(ValueError, match="nlayers"):
        DINOHead(8, 10, nlayers=0)


def test_output_shape_and_logits_are_cosines():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    logits = head(torch.randn(5, 8))
    assert logits.shape == (5, 10)
    assert logits.abs().max() <= 1.0 + 1e-6


@pytest.mark.parametrize("norm_last_layer", [True, False])
def test_last_layer_rows_have_unit_norm_and_g_freezes_only_when_asked(norm_last_layer):
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=norm_last_layer)
    row_norms = head.last_layer.weight.norm(dim=1)
    torch.testing.assert_close(row_norms, torch.ones(10))
    assert torch.all(_magnitude(head) == 1.0)
    assert _magnitude(head).requires_grad is (not norm_last_layer)
    assert head.last_layer.bias is None


def test_frozen_g_stays_out_of_the_optimiser_and_at_one_after_a_step():
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4, norm_last_layer=True)
    groups = param_groups(head)
    ids = {id(p) for group in groups for p in group["params"]}
    assert id(_magnitude(head)) not in ids
    assert id(head.last_layer.parametrizations.weight.original1) in ids
    optimizer = torch.optim.AdamW(groups, lr=0.1)
    head(torch.randn(4, 8)).pow(2).sum().backward()
    optimizer.step()
    assert torch.all(_magnitude(head) == 1.0)
    torch.testing.assert_close(head.last_layer.weight.norm(dim=1), torch.ones(10))


def test_state_dict_round_trips_through_a_weights_only_load(tmp_path):
    torch.manual_seed(0)
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(3.0)
    path = tmp_path / "head.pt"
    torch.save(head.state_dict(), path)
    fresh = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    fresh.load_state_dict(torch.load(path, weights_only=True))
    x = torch.randn(3, 8)
    torch.testing.assert_close(fresh(x), head(x))
    assert _magnitude(fresh).requires_grad is False


def test_deepcopy_gives_an_independent_teacher():
    head = DINOHead(8, 10, hidden_dim=16, bottleneck_dim=4)
    teacher = copy.deepcopy(head)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.add_(1.0)
    x = torch.randn(3, 8)
    assert not torch.allclose(teacher(x), head(x))


def test_ssl_network_returns_features_and_logits():
    torch.manual_seed(0)
    backbone = build_backbone("vit_mini", image_size=16, patch_size=8)
    net = SSLNetwork(backbone, DINOHead(backbone.embed_dim, 12, hidden_dim=16, bottleneck_dim=4))
    x = torch.randn(2, 3, 16, 16)
    features, logits = net(x)
    assert features.shape == (2, 192) and logits.shape == (2, 12)
    net.eval()
    with torch.no_grad():
        features, logits = net(x)
        torch.testing.assert_close(logits, net.head(net.backbone(x)))
