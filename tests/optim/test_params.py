import torch
from torch import nn

from sslgraph.models.heads import DINOHead
from sslgraph.optim.params import cancel_last_layer_gradients, clip_gradients, param_groups


def _ids(params) -> set[int]:
    return {id(p) for p in params}


def test_param_groups_decay_weights_only():
    model = nn.Sequential(nn.Linear(3, 4), nn.LayerNorm(4), nn.Conv2d(4, 2, 1))
    model.register_parameter("scale", nn.Parameter(torch.ones(2, 1)))
    frozen = nn.Linear(2, 2)
    frozen.requires_grad_(False)
    groups = param_groups(model, frozen)
    decay = next(g for g in groups if g["apply_wd"])
    no_decay = next(g for g in groups if not g["apply_wd"])
    assert "weight_decay" not in decay and no_decay["weight_decay"] == 0.0
    assert _ids(decay["params"]) == _ids([model[0].weight, model[2].weight, model.scale])
    assert _ids(no_decay["params"]) == _ids([model[0].bias, model[1].weight, model[1].bias, model[2].bias])
    assert _ids(frozen.parameters()).isdisjoint(_ids(decay["params"]) | _ids(no_decay["params"]))


def test_param_groups_list_shared_parameters_once_and_drop_empty_groups():
    layer = nn.Linear(3, 3, bias=False)
    groups = param_groups(layer, nn.Sequential(layer))
    assert len(groups) == 1 and groups[0]["apply_wd"]
    assert len(groups[0]["params"]) == 1


def test_clip_gradients_clips_each_parameter_by_its_own_norm():
    big = nn.Parameter(torch.zeros(2))
    small = nn.Parameter(torch.zeros(2))
    no_grad = nn.Parameter(torch.zeros(2))
    model = nn.Module()
    model.big, model.small, model.no_grad = big, small, no_grad
    big.grad = torch.tensor([3.0, 4.0])  # norm 5
    small.grad = torch.tensor([0.3, 0.4])  # norm 0.5
    norms = clip_gradients(model, 1.0)
    torch.testing.assert_close(norms, torch.tensor([5.0, 0.5]))
    torch.testing.assert_close(big.grad, torch.tensor([0.6, 0.8]))
    torch.testing.assert_close(small.grad, torch.tensor([0.3, 0.4]))
    assert no_grad.grad is None


def test_clip_gradients_matches_a_per_parameter_reference():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3))
    (model(torch.randn(4, 6)) * 10).pow(2).sum().backward()
    expected = []
    for p in model.parameters():
        norm = p.grad.norm()
        expected.append(p.grad * min(1.0, 0.5 / (norm.item() + 1e-6)))
    clip_gradients(model, 0.5)
    for p, ref in zip(model.parameters(), expected):
        torch.testing.assert_close(p.grad, ref)
        assert p.grad.norm() <= 0.5 + 1e-5


def test_last_layer_gradients_are_cancelled_only_while_frozen():
    head = DINOHead(4, 6, hidden_dim=8, bottleneck_dim=3, norm_last_layer=False)
    for epoch, frozen in ((0, True), (1, False)):
        head.zero_grad(set_to_none=True)
        head(torch.randn(2, 4)).sum().backward()
        cancel_last_layer_gradients(head, epoch=epoch, freeze_epochs=1)
        last = list(head.last_layer.parameters())
        assert len(last) == 2
        assert all((p.grad is None) == frozen for p in last)
        assert all(p.grad is not None for p in head.mlp.parameters())
