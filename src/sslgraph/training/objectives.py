"""What the student learns from at each step: DINO self-distillation or a contrastive (SimCLR) loss.

Both run on the same two streams (an EMA teacher and the student), feed the same banks and graphs, and share
the loop; an objective only decides the loss of a step and any state of its own (DINO's centre); its head is
registered beside it in :data:`sslgraph.models.network.HEADS`. DINO is the paper's objective and the default
of its presets; ``simclr`` is what a CPU budget of minutes needs: DINO's centring and sharpening take many
epochs to leave the random-feature plateau, a contrastive loss starts learning in the first one.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed.nn.functional as dist_nn
from torch import Tensor

from sslgraph.choices import ObjectiveName
from sslgraph.config import Config
from sslgraph.losses.contrastive import multi_crop_nt_xent_loss
from sslgraph.losses.dino import dino_loss, teacher_batch_mean, updated_center
from sslgraph.optim.schedules import teacher_temp_schedule
from sslgraph.utils import dist


class Objective:
    """The loss of one step from the student's (and, where needed, the teacher's) head outputs."""

    #: whether :meth:`loss` reads the teacher's head outputs of both views (else the teacher only embeds crop 1
    #: for the method's teacher bank, or nothing at all).
    needs_teacher: bool = True

    def __init__(self, cfg: Config, *, device: torch.device) -> None:
        self.cfg = cfg
        self.device = device

    def loss(self, student_out: Tensor, teacher_out: Tensor | None, *, epoch: int) -> Tensor:
        """``student_out``: ``[V, B, K]`` head outputs of V views of the same B images (the two global views
        first, then any local crops); ``teacher_out``: ``[2, B, K]``, the teacher's outputs of the global views."""
        raise NotImplementedError

    def after_step(self, teacher_out: Tensor | None) -> None:
        """Update state from the step's teacher outputs (no gradient)."""

    def log_values(self, epoch: int) -> dict[str, float]:
        """Values of the objective's own schedules for the epoch's log record."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        return None


class DINOObjective(Objective):
    """Cross-entropy between the centred, sharpened teacher and the student of the other view (METHOD.md, A)."""

    needs_teacher = True

    def __init__(self, cfg: Config, *, device: torch.device) -> None:
        super().__init__(cfg, device=device)
        o = cfg.optim
        self.center = torch.zeros(1, cfg.model.out_dim, device=device)
        self.teacher_temps = teacher_temp_schedule(o.warmup_teacher_temp, o.teacher_temp,
                                                   warmup_epochs=o.warmup_teacher_temp_epochs, epochs=o.epochs)

    def teacher_temp(self, epoch: int) -> float:
        return float(self.teacher_temps[min(epoch, len(self.teacher_temps) - 1)])

    def log_values(self, epoch: int) -> dict[str, float]:
        return {"teacher_temp": self.teacher_temp(epoch)}

    def loss(self, student_out: Tensor, teacher_out: Tensor | None, *, epoch: int) -> Tensor:
        assert teacher_out is not None
        return dino_loss(student_out, teacher_out, self.center, student_temp=self.cfg.optim.student_temp,
                         teacher_temp=self.teacher_temp(epoch))

    def after_step(self, teacher_out: Tensor | None) -> None:
        assert teacher_out is not None
        batch_mean = dist.all_reduce_mean(teacher_batch_mean(teacher_out.float()))
        self.center = updated_center(self.center, batch_mean, momentum=self.cfg.optim.center_momentum)

    def state_dict(self) -> dict[str, Any]:
        return {"center": self.center}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.center = state["center"].to(self.device)


class SimCLRObjective(Objective):
    """NT-Xent between the student's two views; negatives are every other view of the global batch.

    Under DDP the projections are all-gathered with gradients, so a k-process run optimises the same loss as
    one process with the same global batch.
    """

    needs_teacher = False

    def loss(self, student_out: Tensor, teacher_out: Tensor | None, *, epoch: int) -> Tensor:
        o = self.cfg.optim
        keys, offset = None, 0  # one process: the batch is its own key set
        if dist.is_dist():
            keys = torch.cat(dist_nn.all_gather(student_out), dim=1)  # [V, global batch, D], with gradients
            offset = dist.rank() * student_out.shape[1]
        return multi_crop_nt_xent_loss(student_out, temperature=o.contrastive_temperature, keys=keys, offset=offset,
                                       decoupled=o.contrastive_decoupled)


OBJECTIVES: dict[str, type[Objective]] = {"dino": DINOObjective, "simclr": SimCLRObjective}


def build_objective(cfg: Config, *, device: torch.device) -> Objective:
    """The objective named by ``method.objective``."""
    name: ObjectiveName = cfg.method.objective
    return OBJECTIVES[name](cfg, device=device)
