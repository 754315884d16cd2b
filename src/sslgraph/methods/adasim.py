"""AdaSim: DINO whose second crop may come from a neighbour chosen by a vote over the teacher's memory bank.

The teacher bank keeps every training image's latest clean-crop feature and its top-k list; each epoch end pushes
the lists into a window of ``V`` epochs. Once the window is full, every epoch draws a partner per image
(:func:`sslgraph.graph.bootstrap.sample_partners`) and the data pipeline takes crop 2 from it, so neighbours act as
positives. The draw is over the best ``topk`` candidates of the vote, as in the reference
(``method.bootstrap_candidates=window``: every candidate of the window, up to ``topk * V``). Banks are updated with
the batch gathered from every process, and partners are drawn with a generator seeded from ``(seed, epoch)``, so all
processes agree without communicating.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from sslgraph.config import Config
from sslgraph.graph.bank import MemoryBank
from sslgraph.graph.bootstrap import sample_partners
from sslgraph.methods.hooks import Method, TrainContext
from sslgraph.utils import dist


def partner_seed(seed: int, epoch: int) -> int:
    """Seed of the partner draw of ``epoch``: distinct per epoch, identical on every process."""
    return (seed * 1_000_003 + epoch) % (2**63)


class BankVisit(NamedTuple):
    """What :func:`visit_bank` leaves: the gathered batch's lists, and this process's search candidates."""

    indices: Tensor  # [G]: every process's batch indices
    nn_sim: Tensor  # [G, k]
    nn_idx: Tensor  # [G, k]
    candidates: Tensor  # [B, C]: the rows this process's queries were ranked among


def visit_bank(bank: MemoryBank, *, indices: Tensor, feats: Tensor, among: Tensor | None = None) -> BankVisit:
    """Search this process's batch against ``bank`` (before the update), then update every process's copy
    with the gathered batch. ``among`` (``[B, C]`` rows per query, e.g. another bank's candidates): rank
    only those instead of searching the whole bank."""
    feats = F.normalize(feats.to(bank.device, torch.float32), dim=1)
    if among is None:
        sim, idx, candidates = bank.search_with_candidates(feats)
    else:
        (sim, idx), candidates = bank.rank(feats, among), among
    gathered = [dist.all_gather_cat(t.to(bank.device)) for t in (indices.long(), feats, sim, idx)]
    all_indices, all_feats, all_sim, all_idx = gathered
    bank.update(all_indices, all_feats, all_sim, all_idx)
    return BankVisit(all_indices, all_sim, all_idx, candidates)


class AdaSim(Method):
    """Teacher memory bank + neighbour bootstrapping of crop 2."""

    name = "adasim"
    uses_step_features = True

    def __init__(self, cfg: Config, *, num_train: int, num_test: int, embed_dim: int,
                 train_labels: Tensor, test_labels: Tensor, device: torch.device) -> None:
        super().__init__(cfg, num_train=num_train, num_test=num_test, embed_dim=embed_dim,
                         train_labels=train_labels, test_labels=test_labels, device=device)
        # method.bank_search_dim at or above the feature width leaves nothing to narrow: the full width is searched
        # (so a preset's 128 narrows a 512- or 256-wide backbone and leaves a 128-wide one exact).
        search_dim = cfg.method.bank_search_dim
        self.search_dim = search_dim if search_dim is not None and search_dim < embed_dim else None
        self.teacher_bank = self._new_bank(vote_window=cfg.method.vote_window)
        self._epoch_stats: dict[str, float] = {}

    def _new_bank(self, *, vote_window: int, topk: int | None = None) -> MemoryBank:
        me = self.cfg.method
        return MemoryBank(self.num_train, self.embed_dim, topk=me.topk if topk is None else topk,
                          vote_window=vote_window, backend=me.bank_backend, chunk_size=me.bank_chunk_size,
                          search_precision=me.bank_search_precision, search_dim=self.search_dim,
                          refits_per_pass=me.bank_refits_per_pass, device=self.device)

    def on_train_start(self, ctx: TrainContext) -> None:
        if self.cfg.method.init_bank_pass:
            self.teacher_bank.fill(ctx.embed("teacher", "train"))

    def partners_for_epoch(self, epoch: int) -> Tensor | None:
        bank = self.teacher_bank
        if bank.window_len < bank.vote_window:
            self._epoch_stats = {"boot_frac": 0.0}
            return None
        generator = torch.Generator(device=bank.device).manual_seed(partner_seed(self.cfg.seed, epoch))
        window_idx, window_sim = bank.ordered_window()
        me = self.cfg.method
        partners, bootstrapped = sample_partners(window_idx, window_sim, generator=generator,
                                                 temperature=me.sampling_temperature,
                                                 num_candidates=me.topk if me.bootstrap_candidates == "topk" else None)
        self._epoch_stats = {"boot_frac": float(bootstrapped.float().mean())}
        if bool(bootstrapped.any()):
            labels = self.train_labels.to(partners.device)
            same = labels[partners[bootstrapped]] == labels[bootstrapped]
            self._epoch_stats["boot_same_label"] = float(same.float().mean())
        return partners.cpu()

    def after_step(self, *, indices: Tensor, teacher_feats: Tensor, student_feats: Tensor) -> None:
        visit_bank(self.teacher_bank, indices=indices, feats=teacher_feats)

    def on_epoch_end(self, ctx: TrainContext, *, epoch: int) -> dict[str, float]:
        self.teacher_bank.push_window()
        return dict(self._epoch_stats)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher_bank": self.teacher_bank.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.teacher_bank.load_state_dict(state["teacher_bank"])
