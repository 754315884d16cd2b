"""Optimisation helpers: schedules, parameter groups, gradient clipping."""

from sslgraph.optim.params import cancel_last_layer_gradients, clip_gradients, param_groups
from sslgraph.optim.schedules import (cosine_schedule, scaled_lr, stretch_tail, teacher_momentum_schedule,
                                      teacher_temp_schedule)

__all__ = [
    "cancel_last_layer_gradients",
    "clip_gradients",
    "cosine_schedule",
    "param_groups",
    "scaled_lr",
    "stretch_tail",
    "teacher_momentum_schedule",
    "teacher_temp_schedule",
]
