import pytest
import torch
import torch.nn.functional as F

from sslgraph.config import Config
from sslgraph.methods import build_method
from sslgraph.methods.adasim import AdaSim, partner_seed
from sslgraph.methods.dino import DINO
from sslgraph.methods.graph import GraphMethod
from tests.methods.fakes import FakeContext, assert_same_state, clustered, trained_and_restored

NUM_TRAIN, NUM_TEST, DIM = 12, 4, 6


def make_cfg(**method) -> Config:
    cfg = Config()
    cfg.method.name = "adasim"
    cfg.method.topk, cfg.method.vote_window, cfg.method.edges_per_node = 3, 2, 1
    for key, value in method.items():
        setattr(cfg.method, key, value)
    return cfg


def build(cfg: Config):
    train_x, train_y = clustered(NUM_TRAIN, 0, dim=DIM)
    test_x, test_y = clustered(NUM_TEST, 1, dim=DIM)
    method = build_method(cfg, num_train=NUM_TRAIN, num_test=NUM_TEST, embed_dim=DIM, train_labels=train_y,
                          test_labels=test_y, device=torch.device("cpu"))
    features = {("teacher", "train"): train_x, ("student", "train"): train_x.flip(1),
                ("teacher", "test"): test_x, ("student", "test"): test_x.flip(1)}
    return method, FakeContext(cfg, features)


def run_epoch(method, ctx, epoch: int, *, batch: int = 4) -> dict[str, float]:
    """One epoch: every training index once, in batches, with slightly perturbed features."""
    method.partners_for_epoch(epoch)
    gen = torch.Generator().manual_seed(100 + epoch)
    order = torch.randperm(NUM_TRAIN, generator=gen)
    for start in range(0, NUM_TRAIN, batch):
        idx = order[start:start + batch]
        noise = 0.05 * torch.randn(len(idx), DIM, generator=gen)
        method.after_step(indices=idx, teacher_feats=3 * ctx.features[("teacher", "train")][idx] + noise,
                          student_feats=ctx.features[("student", "train")][idx] + noise)
    return method.on_epoch_end(ctx, epoch=epoch)


def test_build_method_picks_the_class():
    assert type(build(make_cfg(name="dino"))[0]) is DINO
    assert type(build(make_cfg(name="adasim"))[0]) is AdaSim
    assert type(build(make_cfg(name="graph"))[0]) is GraphMethod


def test_on_train_start_fills_the_teacher_bank():
    method, ctx = build(make_cfg())
    method.on_train_start(ctx)
    assert ctx.calls == [("teacher", "train")]
    assert torch.equal(method.teacher_bank.features, ctx.features[("teacher", "train")])
    assert method.teacher_bank.filled.all()
    method, ctx = build(make_cfg(init_bank_pass=False))
    method.on_train_start(ctx)
    assert ctx.calls == [] and not method.teacher_bank.filled.any()


def test_after_step_searches_before_updating():
    method, ctx = build(make_cfg())
    method.on_train_start(ctx)
    before = method.teacher_bank.features.clone()
    idx = torch.tensor([3, 7])
    feats = torch.randn(2, DIM, generator=torch.Generator().manual_seed(5))
    method.after_step(indices=idx, teacher_feats=feats, student_feats=torch.zeros(2, DIM))
    normalised = F.normalize(feats, dim=1)
    expected_sim, expected_idx = (normalised @ before.T).sort(dim=1, descending=True, stable=True)
    bank = method.teacher_bank
    assert torch.equal(bank.nn_idx[idx], expected_idx[:, :3])
    torch.testing.assert_close(bank.nn_sim[idx], expected_sim[:, :3])
    torch.testing.assert_close(bank.features[idx], normalised)
    torch.testing.assert_close(bank.features[[0, 1, 2]], before[[0, 1, 2]])


def test_partners_are_none_until_the_window_is_full():
    method, ctx = build(make_cfg(sampling_temperature=10.0))
    method.on_train_start(ctx)
    assert method.partners_for_epoch(0) is None
    assert run_epoch(method, ctx, 0) == {"boot_frac": 0.0}
    assert method.partners_for_epoch(1) is None
    run_epoch(method, ctx, 1)
    partners = method.partners_for_epoch(2)
    assert partners is not None and partners.shape == (NUM_TRAIN,) and partners.dtype == torch.long
    assert partners.device.type == "cpu"


def test_partners_and_stats_after_the_window_fills():
    method, ctx = build(make_cfg(sampling_temperature=10.0))
    method.on_train_start(ctx)
    for epoch in range(2):
        run_epoch(method, ctx, epoch)
    partners = method.partners_for_epoch(2)
    stats = run_epoch(method, ctx, 2)
    bootstrapped = partners != torch.arange(NUM_TRAIN)
    assert stats["boot_frac"] == pytest.approx(bootstrapped.float().mean().item())
    assert bootstrapped.any()
    labels = method.train_labels
    assert stats["boot_same_label"] == pytest.approx(
        (labels[partners[bootstrapped]] == labels[bootstrapped]).float().mean().item())
    # Neighbours come from the sample's own tight cluster.
    assert stats["boot_same_label"] == 1.0


def test_partners_depend_only_on_seed_epoch_and_state():
    method, ctx = build(make_cfg(sampling_temperature=10.0))
    method.on_train_start(ctx)
    for epoch in range(2):
        run_epoch(method, ctx, epoch)
    twin, _ = build(make_cfg(sampling_temperature=10.0))
    twin.load_state_dict(method.state_dict())
    assert torch.equal(method.partners_for_epoch(5), twin.partners_for_epoch(5))
    draws = {tuple(method.partners_for_epoch(epoch).tolist()) for epoch in range(5, 10)}
    assert len(draws) > 1
    assert partner_seed(0, 5) != partner_seed(0, 6) and partner_seed(0, 5) != partner_seed(1, 5)


def test_state_dict_round_trip_restores_exactly():
    method, restored = trained_and_restored(build, make_cfg(), run_epoch)
    assert_same_state(method.teacher_bank.state_dict(), restored.teacher_bank.state_dict())


@pytest.mark.parametrize("candidates", ["topk", "window"])
def test_partner_draw_is_over_the_top_topk_of_the_vote_or_the_whole_window(candidates: str) -> None:
    # topk = 2, V = 2. Sample i listed [i, i+1] (sims 1.0, 0.9) one epoch and [i, i+2] (1.0, 0.8) the next:
    # votes i = 2.0, i+1 = 0.9, i+2 = 0.8. The reference draws from the best topk = 2 of them, {i, i+1};
    # the window option from all three. A huge temperature makes the draw uniform over the candidates.
    method, _ = build(make_cfg(topk=2, sampling_temperature=1e6, bootstrap_candidates=candidates))
    bank, own = method.teacher_bank, torch.arange(NUM_TRAIN)
    for offset, sim in ((1, 0.9), (2, 0.8)):
        bank.nn_idx.copy_(torch.stack([own, (own + offset) % NUM_TRAIN], dim=1))
        bank.nn_sim.copy_(torch.tensor([1.0, sim]).expand(NUM_TRAIN, 2))
        bank.push_window()
    offsets = torch.stack([(method.partners_for_epoch(epoch) - own) % NUM_TRAIN for epoch in range(2, 42)])
    drawn = set(offsets.unique().tolist())
    assert drawn == ({0, 1} if candidates == "topk" else {0, 1, 2})
