"""Losses as pure functions of tensors."""

from sslgraph.losses.dino import dino_loss, teacher_batch_mean, updated_center

__all__ = ["dino_loss", "teacher_batch_mean", "updated_center"]
