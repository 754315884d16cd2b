"""Linear classifiers on frozen features: the node-embedding probes and the backbone probe.

:func:`logistic_regression_probe` is the node-embedding probe every report uses for raw, propagated and refined
features alike: features standardised with the training nodes' mean and std, logistic regression trained to
convergence, over seeds. :func:`reference_logistic_probe` is the authors' protocol (features as given, Xavier
weights and zero bias, Adam for a fixed 100 steps), kept under its own name for comparison: on features of
different scales it underfits unevenly, which confounds a raw-versus-refined comparison. :func:`linear_probe`
is DINO's linear evaluation of a frozen backbone, run on pre-extracted features so the backbone is evaluated
once instead of once per epoch.
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


def _xavier_init(seed: int, in_dim: int, out_dim: int) -> tuple[Tensor, Tensor]:
    """Xavier-uniform weight ``[out, in]`` and zero bias (the reference's classifier), drawn on the CPU from
    ``seed`` so it is device-independent: ``U(-b, b)`` with ``b = sqrt(6 / (in + out))``."""
    gen = torch.Generator().manual_seed(seed)
    bound = math.sqrt(6.0 / (in_dim + out_dim))
    weight = torch.empty(out_dim, in_dim).uniform_(-bound, bound, generator=gen)
    return weight, torch.zeros(out_dim)


def standardise(features: Tensor, train_mask: Tensor) -> Tensor:
    """``(x - mean) / std`` per column with the training rows' mean and (population) std; a constant column
    becomes 0."""
    train = features[train_mask]
    mean, std = train.mean(dim=0), train.std(dim=0, unbiased=False)
    return (features - mean) / torch.where(std > 1e-12, std, torch.ones_like(std))


def _probe_group(
    x_train: Tensor, y_train: Tensor, x_test: Tensor, seeds: list[int], num_classes: int, *, lr: float,
    max_steps: int, tol: float | None, patience: int,
) -> tuple[Tensor, int, float]:
    """Train one logistic regression per seed at once; returns test predictions ``[S, N_test]``, the steps
    taken and the final mean training loss.

    The per-seed weights sit side by side in one ``[D, S * C]`` matrix, so all seeds share one matrix product.
    The summed loss gives each seed exactly its own gradient and Adam is element-wise, so one optimiser
    equals ``S`` independent runs. With ``tol``, training stops once the mean loss has dropped by less than
    ``tol * max(loss, 1)`` over the last ``patience`` steps; without it, after exactly ``max_steps``.
    """
    inits = [_xavier_init(seed, x_train.shape[1], num_classes) for seed in seeds]
    weight = torch.cat([w.T for w, _ in inits], dim=1).to(x_train.device)
    bias = torch.cat([b for _, b in inits]).to(x_train.device)
    optimiser = torch.optim.Adam([weight, bias], lr=lr)
    targets = y_train.repeat_interleave(len(seeds))
    one_hot = F.one_hot(targets, num_classes).to(x_train.dtype)
    num = y_train.shape[0]
    history: list[float] = []
    steps = 0
    with torch.no_grad():
        for steps in range(1, max_steps + 1):
            logits = torch.addmm(bias, x_train, weight).view(-1, num_classes)
            log_p = logits.log_softmax(dim=1)
            loss = -(log_p * one_hot).sum() / num
            # The cross-entropy gradient in closed form, (softmax - one-hot) / N: the same numbers autograd
            # gives, without its bookkeeping; [N, S*C]^T @ [N, D] reads the features row by row (the fast way).
            grad_logits = (log_p.exp_() - one_hot).div_(num).view(num, -1)
            weight.grad = (grad_logits.T @ x_train).T
            bias.grad = grad_logits.sum(dim=0)
            optimiser.step()
            if tol is not None:
                history.append(loss.item() / len(seeds))
                if len(history) > patience and history[-patience - 1] - history[-1] < tol * max(history[-1], 1.0):
                    break
        final = F.cross_entropy(torch.addmm(bias, x_train, weight).view(-1, num_classes), targets).item()
        logits = torch.addmm(bias, x_test, weight).view(x_test.shape[0], len(seeds), num_classes)
    return logits.argmax(dim=2).T, steps, final


def _run_probe(name: str, features: Tensor, labels: Tensor, train_mask: Tensor, test_mask: Tensor, *,
               standardize: bool, lr: float, max_steps: int, tol: float | None, patience: int, seeds: int,
               device: torch.device | str | None) -> tuple[list[float], dict[str, Any]]:
    _check_features(features, labels, name)
    if train_mask.shape != labels.shape or test_mask.shape != labels.shape:
        raise ValueError(
            f"{name}: train_mask and test_mask must have shape {tuple(labels.shape)}, "
            f"got {tuple(train_mask.shape)} and {tuple(test_mask.shape)}"
        )
    if seeds < 1 or max_steps < 1 or patience < 1:
        raise ValueError(f"{name}: seeds, steps and patience must be >= 1, got {seeds}, {max_steps}, {patience}")
    if not (lr > 0 and math.isfinite(lr)):
        raise ValueError(f"{name}: lr must be a positive number, got {lr}")
    device = torch.device(device) if device is not None else features.device
    x = features.to(device=device, dtype=torch.float32)
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: features hold NaN or infinite values")
    y = labels.to(device=device, dtype=torch.long)
    train_mask = train_mask.to(device=device, dtype=torch.bool)
    test_mask = test_mask.to(device=device, dtype=torch.bool)
    if not bool(train_mask.any()) or not bool(test_mask.any()):
        raise ValueError(f"{name}: train_mask and test_mask must each select at least one node")
    if standardize:
        x = standardise(x, train_mask)
    num_classes = int(y.max().item()) + 1
    x_train, y_train, x_test, y_test = x[train_mask], y[train_mask], x[test_mask], y[test_mask]

    group = max(1, _MAX_LOGITS_PER_GROUP // max(1, x_train.shape[0] * num_classes))
    accuracies: list[float] = []
    steps_taken: list[int] = []
    losses: list[float] = []
    all_seeds = list(range(seeds))
    for start in range(0, seeds, group):
        preds, taken, loss = _probe_group(x_train, y_train, x_test, all_seeds[start:start + group], num_classes,
                                          lr=lr, max_steps=max_steps, tol=tol, patience=patience)
        steps_taken.append(taken)
        losses.append(loss)
        accuracies.extend(100.0 * correct / y_test.shape[0] for correct in (preds == y_test).sum(dim=1).tolist())
    protocol = {
        "classifier": "logistic regression, Xavier-uniform weights, zero bias",
        "features": "standardised by the training nodes' mean and std" if standardize else "as given",
        "optimizer": "Adam",
        "lr": lr,
        "steps": max(steps_taken),
        "max_steps": max_steps,
        "stopping": (f"loss decrease < {tol} * max(loss, 1) over {patience} steps" if tol is not None
                     else "fixed number of steps"),
        "converged": bool(tol is not None and max(steps_taken) < max_steps),
        "final_train_loss": sum(losses) / len(losses),
        "batch": "full",
        "weight_decay": 0.0,
        "seeds": seeds,
        "num_train": int(y_train.shape[0]),
        "num_test": int(y_test.shape[0]),
        "num_classes": num_classes,
        "metric": "top-1 accuracy (%) on test nodes, mean and population std over seeds",
    }
    return accuracies, protocol


def _summary(accuracies: list[float], protocol: dict[str, Any]) -> dict[str, Any]:
    acc = torch.tensor(accuracies, dtype=torch.float64)
    return {"mean": acc.mean().item(), "std": acc.std(unbiased=False).item(), "accuracies": accuracies,
            "protocol": protocol}


def logistic_regression_probe(
    features: Tensor,
    labels: Tensor,
    train_mask: Tensor,
    test_mask: Tensor,
    *,
    lr: float = 0.01,
    steps: int = 2000,
    seeds: int = 20,
    tol: float = 1e-4,
    patience: int = 20,
    standardize: bool = True,
    device: torch.device | str | None = None,
) -> dict[str, Any]:
    """Logistic regression trained on the train nodes to convergence, accuracy (percent) on the test nodes.

    Features are standardised with the training nodes' per-column mean and std (so the probe sees every
    feature set at the same scale), one classifier per seed ``s in range(seeds)`` starts from Xavier-uniform
    weights and zero bias, and full-batch Adam runs until the training loss has dropped by less than
    ``tol * max(loss, 1)`` over ``patience`` steps, or ``steps`` at most (``protocol.converged`` says which). No weight
    decay. ``std`` is the population std over seeds.
    """
    accuracies, protocol = _run_probe("logistic_regression_probe", features, labels, train_mask, test_mask,
                                      standardize=standardize, lr=lr, max_steps=steps, tol=tol, patience=patience,
                                      seeds=seeds, device=device)
    return _summary(accuracies, protocol)


def reference_logistic_probe(
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
    """The authors' node-embedding protocol: features as given, a linear layer with Xavier-uniform weights and
    zero bias per seed, full-batch Adam (``lr``) for exactly ``steps`` steps, no weight decay."""
    accuracies, protocol = _run_probe("reference_logistic_probe", features, labels, train_mask, test_mask,
                                      standardize=False, lr=lr, max_steps=steps, tol=None, patience=1,
                                      seeds=seeds, device=device)
    protocol["name"] = "reference protocol (authors' code)"
    return _summary(accuracies, protocol)


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
