import pytest
import torch
import torch.nn.functional as F
from torch import nn

from sslgraph.eval.linear import linear_probe, logistic_regression_probe, reference_logistic_probe


def _blobs(n_per_class: int, num_classes: int, dim: int, *, spread: float, seed: int):
    gen = torch.Generator().manual_seed(seed)
    centres = torch.randn(num_classes, dim, generator=gen) * spread
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    feats = centres[labels] + torch.randn(labels.shape[0], dim, generator=gen)
    perm = torch.randperm(labels.shape[0], generator=gen)
    return feats[perm], labels[perm]


def _masks(n: int, n_train: int):
    train = torch.zeros(n, dtype=torch.bool)
    train[:n_train] = True
    return train, ~train


def _xavier_linear(seed: int, in_dim: int, out_dim: int) -> nn.Linear:
    model = nn.Linear(in_dim, out_dim)
    gen = torch.Generator().manual_seed(seed)
    bound = (6.0 / (in_dim + out_dim)) ** 0.5
    with torch.no_grad():
        model.weight.copy_(torch.empty(out_dim, in_dim).uniform_(-bound, bound, generator=gen))
        model.bias.zero_()
    return model


def _independent_runs(feats, labels, train_mask, test_mask, *, seeds, steps, lr, losses=None):
    """One autograd-trained ``nn.Linear`` per seed (the brute-force reference); ``losses`` collects each
    seed's final training loss."""
    expected = []
    for seed in range(seeds):
        model = _xavier_linear(seed, feats.shape[1], 3)
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(model(feats[train_mask]), labels[train_mask]).backward()
            opt.step()
        pred = model(feats[test_mask]).argmax(1)
        expected.append(100.0 * (pred == labels[test_mask]).float().mean().item())
        if losses is not None:
            losses.append(F.cross_entropy(model(feats[train_mask]), labels[train_mask]).item())
    return expected


def test_reference_probe_matches_independent_xavier_runs_on_raw_features():
    feats, labels = _blobs(12, 3, 5, spread=1.5, seed=0)
    feats = feats * 7 + 2
    train_mask, test_mask = _masks(36, 24)
    out = reference_logistic_probe(feats, labels, train_mask, test_mask, lr=0.05, steps=30, seeds=3)
    losses: list[float] = []
    expected = _independent_runs(feats, labels, train_mask, test_mask, seeds=3, steps=30, lr=0.05, losses=losses)
    assert out["accuracies"] == pytest.approx(expected)
    # the probe's closed-form gradient follows autograd's trajectory: same loss after 30 Adam steps
    assert out["protocol"]["final_train_loss"] == pytest.approx(sum(losses) / 3, rel=1e-4)
    assert out["mean"] == pytest.approx(sum(expected) / 3)
    assert out["protocol"]["seeds"] == 3 and out["protocol"]["num_test"] == 12
    assert out["protocol"]["steps"] == 30 and out["protocol"]["features"] == "as given"


def test_probe_standardises_with_training_statistics_and_stops_at_convergence():
    feats, labels = _blobs(12, 3, 5, spread=1.5, seed=0)
    feats = feats * torch.tensor([100.0, 0.01, 1.0, 5.0, 1.0]) + 3
    train_mask, test_mask = _masks(36, 24)
    out = logistic_regression_probe(feats, labels, train_mask, test_mask, lr=0.05, steps=40, seeds=3, tol=None)
    train = feats[train_mask]
    standard = (feats - train.mean(0)) / train.std(0, unbiased=False)
    expected = _independent_runs(standard, labels, train_mask, test_mask, seeds=3, steps=40, lr=0.05)
    assert out["accuracies"] == pytest.approx(expected)
    # a scale change of the input changes nothing
    scaled = logistic_regression_probe(feats * 1000 - 7, labels, train_mask, test_mask, lr=0.05, steps=40, seeds=3,
                                       tol=None)
    assert scaled["accuracies"] == pytest.approx(out["accuracies"])
    converged = logistic_regression_probe(feats, labels, train_mask, test_mask, steps=5000, seeds=2)
    assert converged["protocol"]["converged"] and converged["protocol"]["steps"] < 5000
    capped = logistic_regression_probe(feats, labels, train_mask, test_mask, steps=3, seeds=2)
    assert not capped["protocol"]["converged"] and capped["protocol"]["steps"] == 3


def test_probe_rejects_non_finite_features():
    feats = torch.randn(6, 2)
    feats[1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        logistic_regression_probe(feats, torch.tensor([0, 1, 0, 1, 0, 1]), torch.arange(6) < 4, torch.arange(6) >= 4)


def test_logistic_probe_separable_and_shuffled():
    feats, labels = _blobs(40, 4, 8, spread=6.0, seed=1)
    train_mask, test_mask = _masks(160, 100)
    good = logistic_regression_probe(feats, labels, train_mask, test_mask, seeds=4)
    assert good["mean"] > 98.0 and len(good["accuracies"]) == 4
    shuffled = labels[torch.randperm(160, generator=torch.Generator().manual_seed(5))]
    bad = logistic_regression_probe(feats, shuffled, train_mask, test_mask, seeds=4)
    assert bad["mean"] < 50.0


def test_logistic_probe_rejects_bad_masks():
    with pytest.raises(ValueError, match="train_mask"):
        logistic_regression_probe(torch.randn(5, 2), torch.zeros(5, dtype=torch.long),
                                  torch.ones(4, dtype=torch.bool), torch.ones(5, dtype=torch.bool))


def test_linear_probe_separable_and_shuffled():
    feats, labels = _blobs(50, 4, 16, spread=4.0, seed=2)
    out = linear_probe(feats[:150], labels[:150], feats[150:], labels[150:], epochs=20, lr=0.1, batch_size=32)
    assert out["top1"] > 98.0
    assert out["protocol"]["lr_scaled"] == pytest.approx(0.1 * 32 / 256)
    shuffled = labels[torch.randperm(200, generator=torch.Generator().manual_seed(6))]
    bad = linear_probe(feats[:150], shuffled[:150], feats[150:], shuffled[150:], epochs=20, lr=0.1, batch_size=32)
    assert bad["top1"] < 50.0


def test_linear_probe_is_invariant_to_feature_scale_and_deterministic():
    feats, labels = _blobs(20, 3, 6, spread=2.0, seed=3)
    a = linear_probe(feats[:40], labels[:40], feats[40:], labels[40:], epochs=5, lr=0.05, batch_size=8, seed=1)
    b = linear_probe(feats[:40] * 100 + 3, labels[:40], feats[40:] * 100 + 3, labels[40:],
                     epochs=5, lr=0.05, batch_size=8, seed=1)
    assert a["top1"] == pytest.approx(b["top1"])
