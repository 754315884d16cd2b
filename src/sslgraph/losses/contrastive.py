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
                 offset: int = 0) -> Tensor:
    """Mean cross-entropy of each view picking its other view among all ``2N`` views of the batch.

    ``z1``, ``z2``: ``[B, D]`` projections of the two views of the same ``B`` images (row ``i`` of each is
    image ``i``). Similarities are cosines divided by ``temperature``; a view is never its own negative.

    ``keys`` (optional): the ``[N, D]`` views of the *global* batch (e.g. all-gathered, with gradients, across
    processes) that the local queries ``z1``/``z2`` are compared with; the positives of local row ``i`` are
    then global rows ``offset + i``. With ``keys=None`` the batch is its own key set (``N = B``, ``offset=0``).
    Averaging the per-process results over processes gives the single-process loss of the global batch.
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
        return F.cross_entropy(logits, targets)
