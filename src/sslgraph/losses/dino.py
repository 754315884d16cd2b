"""DINO self-distillation loss and the teacher centre update, as pure functions.

The caller owns the centre tensor and any cross-process reduction: :func:`teacher_batch_mean` gives this
process's mean, the caller all-reduces it, and :func:`updated_center` returns the new centre.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def dino_loss(
    student_logits: Tensor,
    teacher_logits: Tensor,
    center: Tensor,
    *,
    student_temp: float,
    teacher_temp: float,
) -> Tensor:
    """Cross-entropy between the centred, sharpened teacher of one view and the student of every other view.

    ``student_logits`` is ``[V, B, K]`` (V views of the same B samples), ``teacher_logits`` ``[T, B, K]`` with
    ``T <= V``: the teacher sees the first T (global) views, the student all of them, local crops after the
    global ones (multi-crop). ``center`` is ``[1, K]``. The result is the mean over the ``T * (V - 1)`` pairs
    ``a != b`` (``a`` a teacher view, ``b`` a student view) of ``mean_i sum_k -t^(a)_ik s^(b)_ik``; for two
    views, ``(H(t2, s1) + H(t1, s2)) / 2``. The teacher side carries no gradient. Computed in float32, with
    autocast off, because sharp softmaxes over many prototypes lose too much in half precision.
    """
    if (student_logits.dim() != 3 or teacher_logits.dim() != 3 or student_logits.shape[1:] != teacher_logits.shape[1:]
            or teacher_logits.shape[0] > student_logits.shape[0]):
        raise ValueError(
            f"dino_loss: student_logits must be [V, B, K] and teacher_logits [T, B, K] with T <= V, got "
            f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}"
        )
    views, batch, k = student_logits.shape
    teacher_views = teacher_logits.shape[0]
    if views < 2:
        raise ValueError(f"dino_loss: needs at least 2 views, got V={views}")
    if center.shape != (1, k):
        raise ValueError(f"dino_loss: center must be [1, {k}], got {tuple(center.shape)}")
    with torch.autocast(device_type=student_logits.device.type, enabled=False):
        teacher = F.softmax((teacher_logits.detach().float() - center.detach().float()) / teacher_temp, dim=-1)
        student = F.log_softmax(student_logits.float() / student_temp, dim=-1)
        # pair[a, b] = mean_i sum_k -t^(a)_ik s^(b)_ik for every teacher view a and student view b.
        pair = -torch.einsum("aik,bik->ab", teacher, student) / batch
        crossed = pair.sum() - pair.diagonal().sum()  # [T, V]: the diagonal is a == b, a < T
        return crossed / (teacher_views * (views - 1))


def teacher_batch_mean(teacher_logits: Tensor) -> Tensor:
    """This process's mean teacher output over views and samples, ``[1, K]`` in float32."""
    if teacher_logits.dim() != 3:
        raise ValueError(f"teacher_batch_mean: teacher_logits must be [V, B, K], got {tuple(teacher_logits.shape)}")
    return teacher_logits.detach().float().mean(dim=(0, 1)).unsqueeze(0)


def updated_center(center: Tensor, teacher_logits_mean: Tensor, *, momentum: float) -> Tensor:
    """``momentum * center + (1 - momentum) * teacher_logits_mean``: the centre as an EMA of teacher outputs."""
    if center.shape != teacher_logits_mean.shape:
        raise ValueError(
            f"updated_center: center {tuple(center.shape)} and teacher_logits_mean "
            f"{tuple(teacher_logits_mean.shape)} must have the same shape"
        )
    return center * momentum + teacher_logits_mean.to(center.dtype) * (1.0 - momentum)
