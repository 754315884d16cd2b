"""AdaSim neighbour bootstrapping: a vote over the last ``W`` epochs' top-k lists, then partner sampling.

For sample ``i``, every index ``j`` appearing in its lists over the window scores the sum of the similarities
with which it appears (0 in epochs where it is absent). If the best-scoring candidate is not ``i`` itself the
latent space is judged unreliable around ``i`` and ``i`` keeps itself; otherwise a partner is drawn from
``softmax(score / W / temperature)`` over the candidates (``i`` included). Everything is computed for all
``N`` samples at once with fixed-order tensor operations (no atomics), so every process that runs it with
the same generator state draws the same partners.
"""

from __future__ import annotations

import torch
from torch import Tensor


def vote(window_idx: Tensor, window_sim: Tensor) -> tuple[Tensor, Tensor]:
    """``(cand [N, C], score [N, C])``: distinct candidates per sample by summed similarity, best first.

    Ties in score put the lower index first; index ``-1`` entries are ignored; rows with fewer than ``C``
    candidates are padded with ``-1`` / ``-inf``. ``C`` is the largest number of candidates of any row.
    """
    if window_idx.dim() != 3 or window_idx.shape != window_sim.shape:
        raise ValueError(f"vote: window_idx {tuple(window_idx.shape)} and window_sim {tuple(window_sim.shape)} "
                         f"must both be [W, N, k]")
    _, num, _ = window_idx.shape
    ids = window_idx.permute(1, 0, 2).reshape(num, -1)
    sims = window_sim.permute(1, 0, 2).reshape(num, -1).float()
    absent = torch.iinfo(torch.long).max
    ids, order = torch.where(ids < 0, absent, ids).sort(dim=1, stable=True)
    sims = sims.gather(1, order)

    # Equal ids are now contiguous; each group's first position accumulates the whole group in a fixed order.
    score = sims.clone()
    for shift in range(1, ids.shape[1]):
        same = ids[:, shift:] == ids[:, :-shift]
        if not bool(same.any()):
            break
        score[:, :-shift] += torch.where(same, sims[:, shift:], 0.0)
    first = torch.ones_like(ids, dtype=torch.bool)
    first[:, 1:] = ids[:, 1:] != ids[:, :-1]
    valid = first & (ids != absent)

    # Positions are in ascending id order, so a stable sort keeps the lower id first among equal scores.
    score = torch.where(valid, score, float("-inf"))
    score, order = score.sort(dim=1, descending=True, stable=True)
    valid = valid.gather(1, order)
    cand = torch.where(valid, ids.gather(1, order), -1)
    width = int(valid.sum(dim=1).max()) if num else 0
    return cand[:, :width], score[:, :width]


def sample_partners(window_idx: Tensor, window_sim: Tensor, *, temperature: float, generator: torch.Generator,
                    num_candidates: int | None = None) -> tuple[Tensor, Tensor]:
    """``(partners [N], bootstrapped [N] bool)``: the image crop 2 of each sample is taken from.

    Gumbel-max sampling from ``softmax(score / W / temperature)`` with ``generator`` (on the window's
    device), so a seed fixes the draw. ``num_candidates`` keeps only the best candidates (None: all).
    Samples with an empty window keep themselves.
    """
    if temperature <= 0:
        raise ValueError(f"sample_partners: temperature must be > 0, got {temperature}")
    if num_candidates is not None and num_candidates < 1:
        raise ValueError(f"sample_partners: num_candidates must be >= 1 or None, got {num_candidates}")
    window = window_idx.shape[0]
    num = window_idx.shape[1]
    own = torch.arange(num, device=window_idx.device)
    cand, score = vote(window_idx, window_sim)
    if num_candidates is not None:
        cand, score = cand[:, :num_candidates], score[:, :num_candidates]
    if cand.shape[1] == 0:
        return own, torch.zeros(num, dtype=torch.bool, device=own.device)

    reliable = cand[:, 0] == own
    uniform = torch.rand(cand.shape, generator=generator, device=cand.device).clamp_min(torch.finfo(torch.float32).tiny)
    gumbel = -torch.log(-torch.log(uniform))
    choice = (score / (window * temperature) + gumbel).argmax(dim=1, keepdim=True)
    drawn = cand.gather(1, choice).squeeze(1)
    partners = torch.where(reliable, drawn, own)
    return partners, partners != own
