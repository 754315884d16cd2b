"""Linear classifiers on frozen features: the node-embedding probe and the backbone probe.

:func:`logistic_regression_probe` is the reference's protocol for node embeddings (raw and refined alike, so
the pair is the refinement ablation). :func:`linear_probe` is DINO's linear evaluation of a frozen backbone,
run on pre-extracted features so the backbone is evaluated once instead of once per epoch.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

# Largest logits tensor (seeds x nodes x classes) one optimisation group may hold; more seeds are split
# into groups, which changes nothing since the seeds are independent.
_MAX_LOGITS_PER_GROUP = 1 << 27


def _check_features(features: Tensor, labels: Tensor, name: str) -> None:
    if features.dim() != 2:
        raise ValueError(f"{name}: features must be 2-D [N, D], got shape {tuple(features.shape)}")
    if labels.shape != (features.shape[0],):
        raise ValueError(f"{name}: labels must have shape [{features.shape[0]}], got {tuple(labels.shape)}")


def _linear_init(seed: int, in_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
    """``nn.Linear``'s default initialisation, drawn on the CPU from ``seed`` so it is device-independent.

    ``kaiming_uniform_(a=sqrt(5))`` on the weight and the bias bound both reduce to ``U(-1/sqrt(in), 1/sqrt(in))``;
    the draws are in ``nn.Linear``'s order (weight ``[out, in]``, then bias).
    """
    gen = torch.Generator().manual_seed(seed)
    bound = 1.0 / math.sqrt(in_dim)
    weight = torch.empty(out_dim, in_dim).uniform_(-bound, bound, generator=gen)
    bias = torch.empty(out_dim).uniform_(-bound, bound, generator=gen)
    return weight, bias


def _probe_group(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, seeds: list[int], num_classes: int, *, lr: float, steps: int
) -> Tensor:
    """Train one logistic regression per seed at once; returns test predictions ``[S, N_test]``.

    The per-seed weights sit side by side in one ``[D, S * C]`` matrix, so all seeds share one matrix product.
    The summed loss gives each seed exactly its own gradient and Adam is element-wise, so one optimiser
    equals ``S`` independent runs.
    """
    inits = [_linear_init(seed, x_train.shape[1], num_classes) for seed in seeds]
    weight = torch.cat([w.T for w, _ in inits], dim=1).to(x_train.device).requires_grad_()
    bias = torch.cat([b for _, b in inits]).to(x_train.device).requires_grad_()
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    targets = y_train.repeat_interleave(len(seeds))
    with torch.enable_grad():
        for _ in range(steps):
            optimiser.zero_grad(set_to_none=True)
            logits = torch.addmm(bias, x_train, weight).view(-1, num_classes)
            loss = F.cross_entropy(logits, targets, reduction="sum") / y_train.shape[0]
            loss.backward()
            optimiser.step()
    with torch.no_grad():
        logits = torch.addmm(bias, x_test, weight).view(x_test.shape[0], len(seeds), num_classes)
    return logits.argmax(dim=2).T


def logistic_regression_probe(
    features: Tensor,
    labels: Tensor,
    train_mask: Tensor,
    test_mask: Tensor,
    *,
    lr: float = 0.01,
    steps: int = 100,
    seeds: int = 20,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Logistic regression trained on the train nodes, accuracy (percent) on the test nodes, over seeds.

    Reference protocol: ``nn.Linear`` freshly initialised from seed ``s`` for ``s in range(seeds)``, Adam,
    full-batch cross-entropy, no weight decay, features used as given. ``std`` is the population std
    over seeds.
    """
    _check_features(features, labels, "logistic_regression_probe")
    if train_mask.shape != labels.shape or test_mask.shape != labels.shape:
        raise ValueError(
            f"logistic_regression_probe: train_mask and test_mask must have shape {tuple(labels.shape)}, "
            f"got {tuple(train_mask.shape)} and {tuple(test_mask.shape)}"
        )
    if seeds < 1 or steps < 1:
        raise ValueError(f"logistic_regression_probe: seeds and steps must be >= 1, got {seeds}, {steps}")
    device = torch.device(device) if device is not None else features.device
    x = features.to(device=device, dtype=torch.float32)
    y = labels.to(device=device, dtype=torch.long)
    train_mask = train_mask.to(device=device, dtype=torch.bool)
    test_mask = test_mask.to(device=device, dtype=torch.bool)
    if not bool(train_mask.any()) or not bool(test_mask.any()):
        raise ValueError("logistic_regression_probe: train_mask and test_mask must each select at least one node")
    num_classes = int(y.max().item()) + 1
    x_train, y_train, x_test, y_test = x[train_mask], y[train_mask], x[test_mask], y[test_mask]

    group = max(1, _MAX_LOGITS_PER_GROUP // max(1, x_train.shape[0] * num_classes))
    accuracies: list[float] = []
    all_seeds = list(range(seeds))
    for start in range(0, seeds, group):
        preds = _probe_group(x_train, y_train, x_test, all_seeds[start:start + group], num_classes, lr=lr, steps=steps)
        accuracies.extend(100.0 * correct / y_test.shape[0] for correct in (preds == y_test).sum(dim=1).tolist())
    acc = torch.tensor(accuracies, dtype=torch.float64)
    return {
        "mean": acc.mean().item(),
        "std": acc.std(unbiased=False).item(),
        "accuracies": accuracies,
        "protocol": {
            "classifier": "logistic regression (nn.Linear init)",
            "optimizer": "Adam",
            "lr": lr,
            "steps": steps,
            "batch": "full",
            "weight_decay": 0.0,
            "seeds": seeds,
            "num_train": int(y_train.shape[0]),
            "num_test": int(y_test.shape[0]),
            "num_classes": num_classes,
            "metric": "top-1 accuracy (%) on test nodes, mean and population std over seeds",
        },
    }


def linear_probe(
    train_features: Tensor,
    train_labels: Tensor,
    test_features: Tensor,
    test_labels: Tensor,
    *,
    epochs: int = 100,
    lr: float = 0.001,
    batch_size: int = 256,
    momentum: float = 0.9,
    weight_decay: float = 0.0,
    seed: int = 0,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """DINO-style linear classifier on frozen features; returns test top-1 (percent) and the protocol.

    As in DINO: ``nn.Linear`` with weight ``N(0, 0.01)`` and zero bias, SGD with momentum, learning rate
    ``lr * batch_size / 256`` annealed by a per-epoch cosine to 0, shuffled mini-batches. Differs from DINO:
    the features are standardised with the training set's per-dimension mean and std (computed once, since
    the backbone is frozen and there is no augmentation), which makes one learning rate fit every backbone.
    """
    _check_features(train_features, train_labels, "linear_probe (train)")
    _check_features(test_features, test_labels, "linear_probe (test)")
    if epochs < 1 or batch_size < 1:
        raise ValueError(f"linear_probe: epochs and batch_size must be >= 1, got {epochs}, {batch_size}")
    device = torch.device(device) if device is not None else train_features.device
    x_train = train_features.to(device=device, dtype=torch.float32)
    x_test = test_features.to(device=device, dtype=torch.float32)
    y_train = train_labels.to(device=device, dtype=torch.long)
    y_test = test_labels.to(device=device, dtype=torch.long)
    mean, std = x_train.mean(dim=0), x_train.std(dim=0, unbiased=False).clamp_min(1e-6)
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    num_classes = int(max(y_train.max().item(), y_test.max().item() if y_test.numel() else 0)) + 1

    gen = torch.Generator().manual_seed(seed)
    weight = (torch.randn(num_classes, x_train.shape[1], generator=gen) * 0.01).to(device).requires_grad_()
    bias = torch.zeros(num_classes, device=device, requires_grad=True)
    scaled_lr = lr * batch_size / 256
    optimiser = torch.optim.SGD([weight, bias], lr=scaled_lr, momentum=momentum, weight_decay=weight_decay)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=epochs, eta_min=0.0)
    with torch.enable_grad():
        for _ in range(epochs):
            order = torch.randperm(x_train.shape[0], generator=gen).to(device)
            for batch in order.split(batch_size):
                optimiser.zero_grad(set_to_none=True)
                loss = F.cross_entropy(F.linear(x_train[batch], weight, bias), y_train[batch])
                loss.backward()
                optimiser.step()
            scheduler.step()
    with torch.no_grad():
        preds = F.linear(x_test, weight, bias).argmax(dim=1)
    top1 = 100.0 * int((preds == y_test).sum().item()) / y_test.shape[0] if y_test.numel() else float("nan")
    return {
        "top1": top1,
        "protocol": {
            "classifier": "linear, weight N(0, 0.01), bias 0",
            "features": "standardised by the training set's mean and std",
            "optimizer": "SGD",
            "momentum": momentum,
            "lr": lr,
            "lr_scaled": scaled_lr,
            "schedule": "cosine over epochs to 0",
            "batch_size": batch_size,
            "epochs": epochs,
            "weight_decay": weight_decay,
            "seed": seed,
            "num_train": int(y_train.shape[0]),
            "num_test": int(y_test.shape[0]),
        },
    }
