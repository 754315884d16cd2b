"""Collapse diagnostics of an embedding: mean pairwise cosine and effective rank.

A self-supervised embedding collapses when every row points the same way (mean pairwise cosine -> 1) or
when the rows span only a few directions (effective rank -> 1). Both are computed on a fixed sample of rows,
so they cost one small Gram matrix and one SVD however many nodes there are.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def _rows(z: Tensor, sample: int | None, seed: int) -> Tensor:
    if z.dim() != 2 or z.shape[0] < 2:
        raise ValueError(f"collapse statistics need a [N >= 2, d] tensor, got {tuple(z.shape)}")
    z = z.detach().float()
    if sample is not None and z.shape[0] > sample:
        index = torch.randperm(z.shape[0], generator=torch.Generator().manual_seed(seed))[:sample]
        z = z[index.to(z.device)]
    return z


def batch_mean_cosine(h: Tensor) -> Tensor:
    """Mean cosine over the pairs of distinct rows of ``h`` ``[N, d]``, differentiable (0 for fewer than two
    rows), from one sum: ``sum_{i != j} <u_i, u_j> = |sum_i u_i|^2 - sum_i |u_i|^2`` with ``u_i`` the
    L2-normalised rows."""
    n = h.shape[0]
    if n < 2:
        return h.new_zeros(())
    u = F.normalize(h, dim=1)
    total = u.sum(dim=0)
    return (total @ total - (u * u).sum()) / (n * (n - 1))


@torch.no_grad()
def mean_pairwise_cosine(z: Tensor, *, sample: int | None = 4096, seed: int = 0) -> float:
    """Mean cosine similarity over all pairs of distinct rows (of a random sample of ``sample`` rows)."""
    return float(batch_mean_cosine(_rows(z, sample, seed)))


@torch.no_grad()
def effective_rank(z: Tensor, *, sample: int | None = 4096, seed: int = 0) -> float:
    """``exp(entropy)`` of the normalised singular values of the centred, L2-normalised rows (Roy & Vetterli,
    2007): ``d`` for an isotropic cloud in ``d`` dimensions, 1 when all rows lie on one line."""
    z = F.normalize(_rows(z, sample, seed), dim=1)
    singular = torch.linalg.svdvals((z - z.mean(dim=0)).double())
    if float(singular.sum()) <= 0:
        return 1.0
    p = singular / singular.sum()
    p = p[p > 0]
    return math.exp(float(-(p * p.log()).sum()))


def collapse_stats(z: Tensor, *, sample: int | None = 4096, seed: int = 0) -> dict[str, float]:
    return {"mean_cosine": mean_pairwise_cosine(z, sample=sample, seed=seed),
            "effective_rank": effective_rank(z, sample=sample, seed=seed)}
