"""NT-Xent (SimCLR's normalised-temperature cross-entropy) as a pure function.

Why it is here: on a short clock (minutes on a CPU) a contrastive objective leaves the random-feature plateau
far sooner than DINO's self-distillation, whose centring and sharpening need many epochs to break symmetry.
The teacher/student streams, banks and graphs of the method are unchanged; only the per-step loss differs.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def nt_xent_loss(z1: Tensor, z2: Tensor, *, temperature: float, keys: tuple[Tensor, Tensor] | None = None,
                 offset: int = 0, decoupled: bool = False) -> Tensor:
    """Mean cross-entropy of each view picking its other view among all ``2N`` views of the batch.

    ``z1``, ``z2``: ``[B, D]`` projections of the two views of the same ``B`` images (row ``i`` of each is
    image ``i``). Similarities are cosines divided by ``temperature``; a view is never its own negative.

    ``keys`` (optional): the ``[N, D]`` views of the *global* batch (e.g. all-gathered, with gradients, across
    processes) that the local queries ``z1``/``z2`` are compared with; the positives of local row ``i`` are
    then global rows ``offset + i``. With ``keys=None`` the batch is its own key set (``N = B``, ``offset=0``).
    Averaging the per-process results over processes gives the single-process loss of the global batch.

    ``decoupled``: leave the positive out of the softmax's denominator (DCL, Yeh et al. 2022), i.e.
    ``-s_pos / T + logsumexp(negatives / T)``. With the positive in the denominator, an easy positive shrinks
    the gradient of every negative by the factor ``1 - p_pos``; without it the loss keeps pushing negatives
    apart however well the positive is matched, which is meant to help small batches and short schedules.
    """
    if z1.dim() != 2 or z1.shape != z2.shape:
        raise ValueError(f"nt_xent_loss: z1 and z2 must both be [B, D], got {tuple(z1.shape)} and {tuple(z2.shape)}")
    if temperature <= 0:
        raise ValueError(f"nt_xent_loss: temperature must be > 0, got {temperature}")
    k1, k2 = (z1, z2) if keys is None else keys
    if k1.shape[1] != z1.shape[1] or k1.shape != k2.shape:
        raise ValueError(f"nt_xent_loss: keys must be two [N, {z1.shape[1]}] tensors, got "
                         f"{tuple(k1.shape)} and {tuple(k2.shape)}")
    b, n = z1.shape[0], k1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):
        queries = F.normalize(torch.cat([z1, z2]).float(), dim=1)            # [2B, D]
        candidates = F.normalize(torch.cat([k1, k2]).float(), dim=1)         # [2N, D]
        logits = queries @ candidates.T / temperature                       # [2B, 2N]
        rows = torch.arange(b, device=z1.device) + offset
        self_cols = torch.cat([rows, rows + n])
        logits = logits.scatter(1, self_cols.unsqueeze(1), float("-inf"))   # a view is not its own negative
        targets = torch.cat([rows + n, rows])
        if not decoupled:
            return F.cross_entropy(logits, targets)
        positives = logits.gather(1, targets.unsqueeze(1)).squeeze(1)
        negatives = logits.scatter(1, targets.unsqueeze(1), float("-inf"))
        return (torch.logsumexp(negatives, dim=1) - positives).mean()


def multi_crop_nt_xent_loss(z: Tensor, *, temperature: float, global_views: int = 2,
                            keys: Tensor | None = None, offset: int = 0, decoupled: bool = False) -> Tensor:
    """Mean :func:`nt_xent_loss` over every pair of views that contains a global view (multi-crop SimCLR).

    ``z``: ``[V, B, D]`` projections of V views of the same B images, the ``global_views`` first and local crops
    after them. The pairs are (global a, any later view b): with two global views and L local crops, the
    global pair and the 2L (global, local) pairs; local crops are never compared with each other, as in
    multi-crop DINO and SwAV, because two small crops of one image often share nothing. With ``V = 2`` this is
    :func:`nt_xent_loss` of the two views. ``keys`` (optional) is ``[V, N, D]``, the views of the global batch
    (see :func:`nt_xent_loss`), ``decoupled`` as there.
    """
    if z.dim() != 3 or z.shape[0] < 2:
        raise ValueError(f"multi_crop_nt_xent_loss: z must be [V >= 2, B, D], got {tuple(z.shape)}")
    if not 1 <= global_views <= z.shape[0]:
        raise ValueError(f"multi_crop_nt_xent_loss: global_views must be in [1, {z.shape[0]}], got {global_views}")
    pairs = [(a, b) for a in range(global_views) for b in range(a + 1, z.shape[0])]
    losses = [nt_xent_loss(z[a], z[b], temperature=temperature, offset=offset, decoupled=decoupled,
                           keys=None if keys is None else (keys[a], keys[b])) for a, b in pairs]
    return torch.stack(losses).mean()
