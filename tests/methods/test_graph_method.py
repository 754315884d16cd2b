import pytest
import torch
import torch.nn.functional as F

from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.graph.export import load_graph, save_graph
from sslgraph.methods import build_method
from sslgraph.methods.graph import STREAMS, GraphMethod, edge_same_class
from tests.methods.fakes import FakeContext, assert_same_state, clustered, trained_and_restored

NUM_TRAIN, NUM_TEST, DIM, TOPK, EDGES, VISITS = 12, 4, 6, 4, 2, 2


def make_cfg(**method) -> Config:
    cfg = Config()
    cfg.method.name = "graph"
    cfg.method.topk, cfg.method.vote_window, cfg.method.edges_per_node = TOPK, VISITS, EDGES
    for key, value in method.items():
        setattr(cfg.method, key, value)
    return cfg


def build(cfg: Config) -> tuple[GraphMethod, FakeContext]:
    train_x, train_y = clustered(NUM_TRAIN, 0, dim=DIM)
    test_x, test_y = clustered(NUM_TEST, 1, dim=DIM)
    method = build_method(cfg, num_train=NUM_TRAIN, num_test=NUM_TEST, embed_dim=DIM, train_labels=train_y,
                          test_labels=test_y, device=torch.device("cpu"))
    features = {("teacher", "train"): train_x, ("student", "train"): train_x.flip(1),
                ("teacher", "test"): test_x, ("student", "test"): test_x.flip(1)}
    return method, FakeContext(cfg, features)


def run_epoch(method: GraphMethod, ctx: FakeContext, epoch: int) -> dict[str, float]:
    method.partners_for_epoch(epoch)
    gen = torch.Generator().manual_seed(100 + epoch)
    order = torch.randperm(NUM_TRAIN, generator=gen)
    for start in range(0, NUM_TRAIN, 4):
        idx = order[start:start + 4]
        noise = 0.05 * torch.randn(len(idx), DIM, generator=gen)
        method.after_step(indices=idx, teacher_feats=ctx.features[("teacher", "train")][idx] + noise,
                          student_feats=ctx.features[("student", "train")][idx] + noise)
    return method.on_epoch_end(ctx, epoch=epoch)


def test_on_train_start_fills_both_banks():
    method, ctx = build(make_cfg())
    method.on_train_start(ctx)
    assert sorted(ctx.calls) == [("student", "train"), ("teacher", "train")]
    for stream in STREAMS:
        assert torch.equal(method.banks[stream].features, ctx.features[(stream, "train")])
    assert method.student_bank.vote_window == 0


def first_step(method: GraphMethod, ctx: FakeContext) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor,
                                                                 torch.Tensor]:
    """Fill the banks, then one step of three samples: (the banks before it, indices, teacher and student
    features)."""
    method.on_train_start(ctx)
    before = {stream: method.banks[stream].features.clone() for stream in STREAMS}
    idx = torch.tensor([0, 5, 9])
    teacher = ctx.features[("teacher", "train")][idx]
    student = torch.randn(3, DIM, generator=torch.Generator().manual_seed(3))
    method.after_step(indices=idx, teacher_feats=teacher, student_feats=student)
    return before, idx, teacher, student


def test_after_step_adds_nearest_non_self_edges_per_stream():
    method, ctx = build(make_cfg())
    before, idx, teacher, student = first_step(method, ctx)
    for stream, feats in (("teacher", teacher), ("student", student)):
        sims = F.normalize(feats, dim=1) @ before[stream].T
        sims[torch.arange(3), idx] = -2.0  # the node itself is never its own edge
        expected = sims.topk(EDGES, dim=1).indices
        graph = method.train_graphs[stream]
        assert torch.equal(graph.slots[idx, 0], expected), stream
        assert graph.visits.tolist() == [1 if i in idx.tolist() else 0 for i in range(NUM_TRAIN)]
        assert (graph.slots[[1, 2, 3]] == -1).all()
        torch.testing.assert_close(method.banks[stream].features[idx], F.normalize(feats, dim=1))


def test_epoch_end_builds_the_held_out_graph_and_logs_edge_purity():
    method, ctx = build(make_cfg(test_graph_every=1))
    method.on_train_start(ctx)
    stats = run_epoch(method, ctx, 0)
    for stream in STREAMS:
        test_feats = ctx.features[(stream, "test")]
        expected = (test_feats @ method.banks[stream].features.T).topk(EDGES, dim=1).indices
        graph = method.test_graphs[stream]
        assert torch.equal(graph.slots[:, 0], expected)
        assert torch.equal(method.test_features[stream], test_feats)
        # Two tight clusters: every neighbour shares the node's label.
        assert stats[f"{stream}_edge_same_class"] == 1.0
        assert stats[f"{stream}_test_edge_same_class"] == 1.0
    assert stats["boot_frac"] == 0.0


def test_held_out_graph_follows_test_graph_every():
    method, ctx = build(make_cfg(test_graph_every=2))
    method.on_train_start(ctx)
    stats = run_epoch(method, ctx, 0)
    assert "teacher_test_edge_same_class" not in stats
    assert method.test_features["teacher"] is None
    run_epoch(method, ctx, 1)
    assert method.test_graphs["teacher"].visits.tolist() == [1] * NUM_TEST


@pytest.mark.parametrize("export", [{"export_edges": "fifo"}, {"export_features": "bank", "export_edges": "rebuilt"},
                                    {"export_features": "clean", "export_edges": "rebuilt"}])
def test_held_out_graph_is_visited_at_the_end_of_the_run_as_planned_not_of_optim_epochs(export):
    """In the last V epochs where the export reads the visits, else in the last epoch only."""
    cfg = make_cfg(test_graph_every=0, **export)
    cfg.optim.epochs = 100
    method, ctx = build(cfg)
    ctx.epochs = VISITS + 1  # a budget that allows this many epochs
    reads_visits = export.get("export_edges") == "fifo" or export.get("export_features") == "bank"
    assert method.exports_held_out_visits == reads_visits
    method.on_train_start(ctx)
    logged = []
    for epoch in range(VISITS + 1):
        logged.append("teacher_test_edge_same_class" in run_epoch(method, ctx, epoch))
    visited = [False] + [reads_visits] * (VISITS - 1) + [True]
    assert logged == visited
    assert method.test_graphs["teacher"].visits.tolist() == [sum(visited)] * NUM_TEST


def test_edge_same_class_counts_filled_slots_with_multiplicity():
    slots = torch.tensor([[[1, -1], [1, 2]], [[-1, -1], [-1, -1]], [[0, 0], [-1, -1]]])
    labels = torch.tensor([0, 0, 1])
    # Node 0: neighbours 1, 1 (same), 2 (other); node 2: 0, 0 (other) -> 2 of 5.
    assert edge_same_class(slots, node_labels=labels, neighbour_labels=labels) == pytest.approx(0.4)
    assert edge_same_class(torch.full((2, 1, 1), -1), node_labels=labels, neighbour_labels=labels) is None


@pytest.mark.parametrize("features", ["bank", "clean"])
def test_train_end_saves_both_streams_fifo_edges(tmp_path, features):
    method, ctx = build(make_cfg(export_features=features, export_edges="fifo"))
    method.on_train_start(ctx)
    for epoch in range(3):
        run_epoch(method, ctx, epoch)
    method.on_train_end(ctx)
    assert list(ctx.graphs) == list(STREAMS)
    for stream in STREAMS:
        data = load_graph(save_graph(ctx.graphs[stream], tmp_path / f"{stream}.pt"))  # the file keeps it all
        train_x = (method.banks[stream].features if features == "bank" else ctx.features[(stream, "train")])
        assert torch.equal(data.x[:NUM_TRAIN], train_x)
        assert torch.equal(data.x[NUM_TRAIN:], ctx.features[(stream, "test")])
        assert data.num_train == NUM_TRAIN
        assert torch.equal(data.y, torch.cat([method.train_labels, method.test_labels]))
        src, dst, weight = method.train_graphs[stream].edges()
        expected = {(j, i, w) for j, i, w in zip(src.tolist(), dst.tolist(), weight.tolist())}
        src, dst, weight = method.test_graphs[stream].edges()
        expected |= {(j, i + NUM_TRAIN, w) for j, i, w in zip(src.tolist(), dst.tolist(), weight.tolist())}
        exported = {(j, i, w) for (j, i), w in zip(data.edge_index.T.tolist(), data.edge_weight.tolist())}
        assert exported == expected
        assert data.edge_weight.max() <= VISITS


def test_export_with_rebuilt_edges(tmp_path):
    method, ctx = build(make_cfg(export_features="clean", export_edges="rebuilt", test_graph_every=0))
    method.on_train_start(ctx)
    run_epoch(method, ctx, 0)
    data = method.build_graphs(ctx)["teacher"]
    x = ctx.features[("teacher", "train")]
    sims = x @ x.T
    sims.fill_diagonal_(-2)
    expected = {(j, i) for i in range(NUM_TRAIN) for j in sims[i].topk(EDGES).indices.tolist()}
    train_edges = data.edge_index[:, data.edge_index[1] < NUM_TRAIN]
    assert set(map(tuple, train_edges.T.tolist())) == expected
    assert (data.edge_weight == 1).all()
    assert method.test_features["teacher"] is None  # a rebuild from clean features needs no held-out pass


def test_student_bank_keeps_e_plus_one_entries_and_gives_the_edges_a_topk_bank_gives():
    method, ctx = build(make_cfg())
    reference, _ = build(make_cfg())
    reference.student_bank = reference._new_bank(vote_window=0)  # the student bank as it was: topk lists
    assert method.student_bank.topk == EDGES + 1 < reference.student_bank.topk == TOPK
    for epoch in range(3):
        run_epoch(method, ctx, epoch)
        run_epoch(reference, ctx, epoch)
    assert torch.equal(method.train_graphs["student"].slots, reference.train_graphs["student"].slots)
    assert torch.equal(method.student_bank.nn_idx, reference.student_bank.nn_idx[:, :EDGES + 1])
    # A checkpoint written with the longer lists resumes into the shorter bank.
    restored, _ = build(make_cfg())
    restored.load_state_dict(reference.state_dict())
    assert_same_state(restored.student_bank.state_dict(), method.student_bank.state_dict())


def test_graph_method_needs_topk_above_edges_per_node():
    with pytest.raises(ConfigError, match=r"method\.topk: must be >= method\.edges_per_node \+ 1 = 3"):
        build(make_cfg(topk=2))
    GraphMethod.check_config(make_cfg(topk=3))


def test_state_dict_round_trip_restores_exactly():
    method, restored = trained_and_restored(build, make_cfg(), run_epoch)
    for stream in STREAMS:
        for a, b in ((method.banks[stream], restored.banks[stream]),
                     (method.train_graphs[stream], restored.train_graphs[stream]),
                     (method.test_graphs[stream], restored.test_graphs[stream])):
            assert_same_state(a.state_dict(), b.state_dict())
        assert torch.equal(restored.test_features[stream], method.test_features[stream])
    assert torch.equal(method.partners_for_epoch(3), restored.partners_for_epoch(3))


def test_projected_bank_search_round_trips_and_a_width_at_the_features_searches_them_whole():
    method, restored = trained_and_restored(build, make_cfg(bank_search_dim=3), run_epoch)
    for stream in STREAMS:
        assert method.banks[stream].search_projection.shape == (DIM, 3)
        assert_same_state(method.banks[stream].state_dict(), restored.banks[stream].state_dict())
    for at_or_above in (DIM, DIM + 10):
        whole, _ = build(make_cfg(bank_search_dim=at_or_above))
        assert whole.search_dim is None
        assert all(whole.banks[stream].search_dim is None for stream in STREAMS)


def test_student_search_teacher_ranks_the_teacher_candidates_in_the_student_bank():
    method, ctx = build(make_cfg(student_search="teacher", bank_search_precision="fp32"))
    before, idx, teacher, student = first_step(method, ctx)
    # An exact float32 teacher bank hands over its top-k rows; the student keeps its best E + 1 among them.
    teacher_rows = (F.normalize(teacher, dim=1) @ before["teacher"].T).topk(TOPK, dim=1).indices
    student_sims = (F.normalize(student, dim=1) @ before["student"].T).gather(1, teacher_rows)
    student_list = teacher_rows.gather(1, student_sims.topk(EDGES + 1, dim=1).indices)
    assert torch.equal(method.student_bank.nn_idx[idx], student_list)
    non_self = [[n for n in row if n != node][:EDGES] for row, node in zip(student_list.tolist(), idx.tolist())]
    assert method.train_graphs["student"].slots[idx, 0].tolist() == non_self
    # The teacher's own lists are those of a full search, as without the option.
    reference, _ = build(make_cfg(bank_search_precision="fp32"))
    first_step(reference, ctx)
    assert torch.equal(method.teacher_bank.nn_idx, reference.teacher_bank.nn_idx)
    assert torch.equal(method.train_graphs["teacher"].slots, reference.train_graphs["teacher"].slots)
