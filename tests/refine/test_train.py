from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from torch_geometric.data import Data

import sslgraph.refine.train as train_module
from sslgraph.config import RefineConfig
from sslgraph.errors import GraphFileError, RefineError
from sslgraph.refine.byol import GraphView
from sslgraph.refine.encoders import ENCODER_KINDS, GNNEncoder
from sslgraph.refine.train import (
    NeighbourSampler,
    build_model,
    graph_view,
    layerwise_embed,
    mask_features,
    refine_graphs,
)
from sslgraph.utils.io import read_jsonl, safe_load

CPU = torch.device("cpu")
NUM_TRAIN, NUM_TEST, DIM, K = 40, 12, 8, 3


def make_graph(seed: int, *, num_train: int = NUM_TRAIN, num_test: int = NUM_TEST) -> Data:
    """Exported-graph layout: each node i gets K edges j -> i from distinct training nodes j != i."""
    gen = torch.Generator().manual_seed(seed)
    num_nodes = num_train + num_test
    target = torch.arange(num_nodes).repeat_interleave(K)
    offsets = torch.rand(num_nodes, num_train - 1, generator=gen).argsort(dim=1)[:, :K].flatten()
    source = (target + 1 + offsets) % num_train
    node = torch.arange(num_nodes)
    return Data(x=torch.randn(num_nodes, DIM, generator=gen), edge_index=torch.stack([source, target]),
                edge_weight=torch.randint(1, 4, (num_nodes * K,), generator=gen).float(),
                y=torch.arange(num_nodes) % 3, train_mask=node < num_train, test_mask=node >= num_train,
                num_train=num_train)


def tiny_cfg(**overrides: object) -> RefineConfig:
    values = dict(hidden_dim=16, projector_dim=8, predictor_dim=8, epochs=3, lr=1e-2, batch_size=16,
                  num_neighbors=[3, 2])
    values.update(overrides)
    return RefineConfig(**values)


def graphs() -> tuple[Data, Data]:
    return make_graph(0), make_graph(1)


def test_default_run_shapes_and_outputs() -> None:
    teacher, student = graphs()
    result = refine_graphs(teacher, student, tiny_cfg(), device=CPU, progress=False)
    assert result.embeddings.shape == (NUM_TRAIN + NUM_TEST, 2 * 16) and result.embeddings.dtype == torch.float32
    assert len(result.losses) == 3 and all(0.0 <= v <= 8.0 for v in result.losses)
    assert result.num_train == NUM_TRAIN and torch.equal(result.y, teacher.y)
    for output, width in (("teacher", 16), ("student", 16), ("mean", 16)):
        other = refine_graphs(teacher, student, tiny_cfg(output=output), device=CPU, progress=False)
        assert other.embeddings.shape[1] == width
        expected = {"teacher": result.embeddings[:, :16], "student": result.embeddings[:, 16:],
                    "mean": (result.embeddings[:, :16] + result.embeddings[:, 16:]) / 2}[output]
        torch.testing.assert_close(other.embeddings, expected)


@pytest.mark.parametrize("batching", ["full", "minibatch"])
def test_two_runs_are_bit_identical(batching: str) -> None:
    teacher, student = graphs()
    cfg = tiny_cfg(batching=batching, feature_mask=0.3, dropout=0.2)
    first = refine_graphs(teacher, student, cfg, device=CPU, progress=False)
    second = refine_graphs(teacher, student, cfg, device=CPU, progress=False)
    assert torch.equal(first.embeddings, second.embeddings)
    assert first.losses == second.losses
    third = refine_graphs(teacher, student, dataclasses.replace(cfg, seed=1), device=CPU, progress=False)
    assert not torch.equal(first.embeddings, third.embeddings)


def held_out_embedding(model_state: dict, data: Data, *, faithful: bool, node: int) -> torch.Tensor:
    model = build_model(DIM, tiny_cfg())
    model.load_state_dict(model_state)
    return model.embed(graph_view(data, faithful=faithful))[node]


@pytest.mark.parametrize("faithful", [False, True])
def test_held_out_node_reads_its_training_neighbours_unless_faithful(faithful: bool) -> None:
    teacher, student = graphs()
    state = refine_graphs(teacher, student, tiny_cfg(faithful=faithful), device=CPU, progress=False).state_dict
    held_out = NUM_TRAIN + 2
    neighbour = int(teacher.edge_index[0, teacher.edge_index[1] == held_out][0])
    perturbed = teacher.clone()
    perturbed.x[neighbour] += 3.0
    before = held_out_embedding(state, teacher, faithful=faithful, node=held_out)
    after = held_out_embedding(state, perturbed, faithful=faithful, node=held_out)
    assert torch.equal(before, after) == faithful


@pytest.mark.parametrize("mode", ["inductive", "transductive"])
def test_inductive_training_never_sees_held_out_features(mode: str) -> None:
    teacher, student = graphs()
    cfg = tiny_cfg(mode=mode)
    base = refine_graphs(teacher, student, cfg, device=CPU, progress=False)
    changed_t, changed_s = teacher.clone(), student.clone()
    changed_t.x[NUM_TRAIN:] += torch.randn(NUM_TEST, DIM)
    changed_s.x[NUM_TRAIN:] *= -2.0
    other = refine_graphs(changed_t, changed_s, cfg, device=CPU, progress=False)
    same_weights = all(torch.equal(base.state_dict[k], other.state_dict[k]) for k in base.state_dict)
    assert same_weights == (mode == "inductive")
    assert torch.equal(base.embeddings[:NUM_TRAIN], other.embeddings[:NUM_TRAIN]) == (mode == "inductive")
    assert not torch.equal(base.embeddings[NUM_TRAIN:], other.embeddings[NUM_TRAIN:])


def test_inductive_minibatch_runs() -> None:
    teacher, student = graphs()
    result = refine_graphs(teacher, student, tiny_cfg(mode="inductive", batching="minibatch"), device=CPU,
                           progress=False)
    assert result.embeddings.shape == (NUM_TRAIN + NUM_TEST, 32) and torch.isfinite(result.embeddings).all()


@pytest.mark.parametrize("kind", ENCODER_KINDS)
def test_minibatch_mode_and_layerwise_inference_match_full_forward(kind: str) -> None:
    teacher, student = graphs()
    result = refine_graphs(teacher, student, tiny_cfg(encoder=kind, batching="minibatch", norm="batch",
                                                      activation="relu"), device=CPU, progress=False)
    assert result.embeddings.shape == (NUM_TRAIN + NUM_TEST, 32) and torch.isfinite(result.embeddings).all()
    model = build_model(DIM, tiny_cfg(encoder=kind, norm="batch", activation="relu"))
    model.load_state_dict(result.state_dict)
    full = torch.cat([model.embed(graph_view(teacher)), model.embed(graph_view(student))], dim=1)
    torch.testing.assert_close(result.embeddings, full, rtol=1e-4, atol=1e-5)
    chunked = layerwise_embed(model.encoder, graph_view(teacher), chunk_size=7, device=CPU, progress=False)
    torch.testing.assert_close(chunked, full[:, :16], rtol=1e-4, atol=1e-5)


def test_sampler_respects_fanout_and_keeps_real_edges() -> None:
    data = make_graph(0)
    view = graph_view(data)
    edges = set(map(tuple, data.edge_index.T.tolist()))
    seeds = torch.tensor([5, 0, 41, 17])
    sampler = NeighbourSampler(view, [2, 1])
    nodes, sub = sampler.sample(seeds, torch.Generator().manual_seed(0))
    edge_index, weight = sub.edge_index, sub.edge_weight
    assert torch.equal(nodes[:4], seeds) and nodes.unique().numel() == nodes.numel()
    assert torch.equal(sub.x, data.x[nodes]) and sum(sub.nodes_per_hop) == nodes.numel()
    global_edges = nodes[edge_index]
    assert set(map(tuple, global_edges.T.tolist())) <= edges
    assert torch.bincount(edge_index[1]).max() <= 2
    seed_in = torch.bincount(edge_index[1], minlength=nodes.numel())[:4]
    assert torch.equal(seed_in, torch.full((4,), 2))
    lookup = {tuple(e): w for e, w in zip(data.edge_index.T.tolist(), data.edge_weight.tolist())}
    assert weight.tolist() == [lookup[tuple(e)] for e in global_edges.T.tolist()]
    full_nodes, full = NeighbourSampler(view, [-1]).sample(seeds, torch.Generator())
    expected = sorted((s, t) for s, t in data.edge_index.T.tolist() if t in seeds.tolist())
    assert sorted(map(tuple, full_nodes[full.edge_index].T.tolist())) == expected
    assert (sampler._local == -1).all()


def test_mask_features_drops_whole_columns() -> None:
    x = torch.randn(6, 50) + 10.0
    masked = mask_features(x, drop_prob=0.5, generator=torch.Generator().manual_seed(0))
    dropped = (masked == 0).all(dim=0)
    assert 0 < int(dropped.sum()) < 50
    assert torch.equal(masked[:, ~dropped], x[:, ~dropped])
    assert mask_features(x, drop_prob=0.0, generator=torch.Generator()) is x


def test_validation_errors_name_the_problem() -> None:
    teacher, student = graphs()
    with pytest.raises(GraphFileError, match="node counts differ"):
        refine_graphs(teacher, make_graph(1, num_test=NUM_TEST + 1), tiny_cfg(), device=CPU)
    broken = student.clone()
    broken.x[[3, 9]] = float("nan")
    broken.x[11, 0] = float("inf")
    with pytest.raises(GraphFileError, match=r"student graph: x has 3 of 52 rows with NaN/inf"):
        refine_graphs(teacher, broken, tiny_cfg(), device=CPU)
    no_y = teacher.clone()
    del no_y.y
    with pytest.raises(GraphFileError, match="teacher graph: missing field.*y"):
        refine_graphs(no_y, student, tiny_cfg(), device=CPU)
    short_mask = teacher.clone()
    short_mask.test_mask = short_mask.test_mask[:-1]
    with pytest.raises(GraphFileError, match="'test_mask' has shape"):
        refine_graphs(short_mask, student, tiny_cfg(), device=CPU)
    empty = Data(x=torch.zeros(0, DIM), edge_index=torch.zeros(2, 0, dtype=torch.long), y=torch.zeros(0),
                 train_mask=torch.zeros(0, dtype=torch.bool), test_mask=torch.zeros(0, dtype=torch.bool))
    with pytest.raises(GraphFileError, match="empty graph"):
        refine_graphs(empty, empty, tiny_cfg(), device=CPU)
    relabelled = student.clone()
    relabelled.y = relabelled.y.flip(0)
    with pytest.raises(GraphFileError, match="disagree on y"):
        refine_graphs(teacher, relabelled, tiny_cfg(), device=CPU)


def test_resume_matches_uninterrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    teacher, student = graphs()
    cfg = tiny_cfg(epochs=6, feature_mask=0.2, batching="minibatch")
    reference = refine_graphs(teacher, student, cfg, device=CPU, progress=False)

    ckpt, log = tmp_path / "refine_checkpoint.pt", tmp_path / "refine_log.jsonl"
    real_append = train_module.append_jsonl

    def crash_at_epoch_4(path: Path, record: dict) -> None:
        if record["epoch"] == 4:
            raise KeyboardInterrupt
        real_append(path, record)

    monkeypatch.setattr(train_module, "append_jsonl", crash_at_epoch_4)
    with pytest.raises(KeyboardInterrupt):
        refine_graphs(teacher, student, cfg, device=CPU, progress=False, checkpoint_path=ckpt, log_path=log,
                      checkpoint_every=3)
    assert safe_load(ckpt)["epoch"] == 3 and len(read_jsonl(log)) == 4
    monkeypatch.setattr(train_module, "append_jsonl", real_append)
    resumed = refine_graphs(teacher, student, cfg, device=CPU, progress=False, checkpoint_path=ckpt, log_path=log,
                            checkpoint_every=3)
    assert torch.equal(resumed.embeddings, reference.embeddings)
    assert resumed.losses == reference.losses
    assert [r["epoch"] for r in read_jsonl(log)] == list(range(6))

    with pytest.raises(RefineError, match="other graphs or refine settings"):
        refine_graphs(teacher, student, dataclasses.replace(cfg, lr=0.5), device=CPU, progress=False,
                      checkpoint_path=ckpt)


def test_layerwise_embed_equals_forward_for_a_fresh_encoder() -> None:
    torch.manual_seed(0)
    encoder = GNNEncoder(DIM, kind="gcnii", num_layers=3, hidden_dim=8, jk="cat").eval()
    data = make_graph(2)
    view = GraphView(data.x, data.edge_index, data.edge_weight)
    expected = encoder(view.x, view.edge_index, view.edge_weight)
    torch.testing.assert_close(layerwise_embed(encoder, view, chunk_size=5, device=CPU, progress=False), expected)
