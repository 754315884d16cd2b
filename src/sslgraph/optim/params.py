"""Parameter groups with weight decay on weights only, per-parameter gradient clipping, last-layer freezing."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from sslgraph.models.heads import DINOHead


def param_groups(*modules: nn.Module) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a non-decayed one (biases, norms, 1-d tensors).

    Each group carries ``apply_wd``; the trainer sets ``weight_decay`` from its schedule on groups where it is
    true. A parameter shared between modules is listed once; empty groups are left out.
    """
    decay: list[Tensor] = []
    no_decay: list[Tensor] = []
    seen: set[int] = set()
    for module in modules:
        for name, param in module.named_parameters():
            if not param.requires_grad or id(param) in seen:
                continue
            seen.add(id(param))
            if param.ndim <= 1 or name.endswith(".bias"):
                no_decay.append(param)
            else:
                decay.append(param)
    groups: list[dict[str, Any]] = []
    if decay:
        groups.append({"params": decay, "apply_wd": True})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0, "apply_wd": False})
    return groups


def clip_gradients(model: nn.Module, clip: float) -> Tensor:
    """Scale each parameter's gradient so that its own norm is at most ``clip``; return the norms before clipping.

    Unlike a global-norm clip, one exploding tensor cannot shrink the updates of all the others.
    The returned tensor has one entry per parameter that has a gradient, in ``model.parameters()`` order.
    """
    if clip <= 0:
        raise ValueError(f"clip_gradients: clip must be > 0, got {clip}")
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    if not grads:
        return torch.zeros(0)
    norms = torch.stack(torch._foreach_norm(grads))
    coefs = (clip / (norms + 1e-6)).clamp(max=1.0)
    torch._foreach_mul_(grads, list(coefs.unbind()))
    return norms


def cancel_last_layer_gradients(head: DINOHead, *, epoch: int, freeze_epochs: int) -> None:
    """Drop the last layer's gradients during the first ``freeze_epochs`` epochs, which stabilises early DINO."""
    if epoch >= freeze_epochs:
        return
    for param in head.last_layer.parameters():
        param.grad = None
