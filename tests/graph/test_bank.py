import io

import pytest
import torch
import torch.nn.functional as F

from torch import Tensor

from sslgraph.graph.bank import (MemoryBank, last_occurrence, principal_directions, resolve_search_precision,
                                 topk_among, topk_cosine, topk_cosine_rescored, topk_through_blocks)


def brute_topk(queries, keys, k):
    """Reference: full similarity matrix and a stable descending sort (lower index first among ties)."""
    values, order = (queries @ keys.T).sort(dim=1, descending=True, stable=True)
    return values[:, :k], order[:, :k]


@pytest.mark.parametrize("chunk_size", [1, 7, 16, 53, 1000])
@pytest.mark.parametrize("k", [1, 5, 20])
def test_topk_cosine_matches_brute_force_on_random_data(chunk_size, k):
    gen = torch.Generator().manual_seed(0)
    queries = F.normalize(torch.randn(9, 8, generator=gen), dim=1)
    keys = F.normalize(torch.randn(53, 8, generator=gen), dim=1)
    values, indices = topk_cosine(queries, keys, k, chunk_size=chunk_size, query_chunk_size=4)
    ref_values, ref_indices = brute_topk(queries, keys, k)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values)


@pytest.mark.parametrize("chunk_size", [1, 3, 10, 64])
def test_topk_cosine_breaks_ties_towards_lower_index(chunk_size):
    # Small integer vectors give exact, heavily tied dot products.
    gen = torch.Generator().manual_seed(1)
    keys = torch.randint(-1, 2, (40, 3), generator=gen).float()
    queries = torch.randint(-1, 2, (12, 3), generator=gen).float()
    values, indices = topk_cosine(queries, keys, 15, chunk_size=chunk_size)
    ref_values, ref_indices = brute_topk(queries, keys, 15)
    assert torch.equal(values, ref_values)
    assert torch.equal(indices, ref_indices)


def test_topk_cosine_all_equal_keys_returns_first_indices():
    keys = torch.ones(10, 2)
    _, indices = topk_cosine(torch.ones(1, 2), keys, 4, chunk_size=3)
    assert indices.tolist() == [[0, 1, 2, 3]]


def test_topk_cosine_rejects_k_larger_than_keys():
    with pytest.raises(ValueError, match="k=6"):
        topk_cosine(torch.ones(1, 2), torch.ones(5, 2), 6)


def test_last_occurrence():
    assert last_occurrence(torch.tensor([3, 1, 3, 2, 1, 3])).tolist() == [3, 4, 5]


def make_bank(**kwargs):
    defaults = dict(num_samples=6, dim=3, topk=2, vote_window=3)
    defaults.update(kwargs)
    return MemoryBank(defaults.pop("num_samples"), defaults.pop("dim"), **defaults)


def test_bank_starts_empty():
    bank = make_bank()
    assert not bank.filled.any()
    assert (bank.nn_idx == -1).all()
    assert bank.features.abs().sum() == 0
    assert bank.window_len == 0


def test_bank_update_with_duplicate_indices_keeps_last_occurrence():
    bank = make_bank()
    indices = torch.tensor([4, 1, 4])
    feats = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0]])
    sims = torch.tensor([[0.9, 0.1], [0.8, 0.2], [0.7, 0.3]])
    idx = torch.tensor([[0, 1], [2, 3], [4, 5]])
    bank.update(indices, feats, sims, idx)
    assert bank.features[4].tolist() == [0, 0, 1.0]
    assert bank.features[1].tolist() == [0, 1.0, 0]
    assert bank.nn_idx[4].tolist() == [4, 5]
    torch.testing.assert_close(bank.nn_sim[4], torch.tensor([0.7, 0.3]))
    assert bank.filled.tolist() == [False, True, False, False, True, False]
    assert (bank.nn_idx[[0, 2, 3, 5]] == -1).all()


def test_bank_update_rejects_wrong_shapes():
    bank = make_bank()
    with pytest.raises(ValueError, match="MemoryBank.update"):
        bank.update(torch.tensor([0]), torch.zeros(1, 4), torch.zeros(1, 2), torch.zeros(1, 2, dtype=torch.long))


def test_bank_search_ranks_against_current_features():
    bank = make_bank(num_samples=4, dim=2, topk=2)
    bank.fill(torch.tensor([[1.0, 0], [0, 1.0], [-1.0, 0], [0.6, 0.8]]))
    sim, idx = bank.search(torch.tensor([[0.8, 0.6]]))
    assert idx.tolist() == [[3, 0]]
    torch.testing.assert_close(sim, torch.tensor([[0.96, 0.8]]))
    assert bank.filled.all()


def test_bank_faiss_backend_matches_exact():
    pytest.importorskip("faiss")
    gen = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(300, 16, generator=gen), dim=1)
    queries = F.normalize(torch.randn(20, 16, generator=gen), dim=1)
    exact, faiss_bank = make_bank(num_samples=300, dim=16, topk=7), make_bank(num_samples=300, dim=16, topk=7,
                                                                              backend="faiss")
    exact.fill(feats)
    faiss_bank.fill(feats)
    sim_e, idx_e = exact.search(queries)
    sim_f, idx_f = faiss_bank.search(queries)
    assert torch.equal(idx_e, idx_f)
    torch.testing.assert_close(sim_e, sim_f)


def test_window_ring_keeps_last_v_epochs_oldest_first():
    bank = make_bank(num_samples=2, topk=1, vote_window=3)
    for epoch in range(5):
        bank.nn_idx.fill_(epoch)
        bank.nn_sim.fill_(epoch / 10)
        bank.push_window()
        idx, sim = bank.ordered_window()
        expected = list(range(max(0, epoch - 2), epoch + 1))
        assert bank.window_len == len(expected)
        assert idx[:, 0, 0].tolist() == expected
        torch.testing.assert_close(sim[:, 1, 0], torch.tensor(expected, dtype=torch.float32) / 10)


def test_bank_without_window_refuses_push():
    bank = make_bank(vote_window=0)
    assert bank.ordered_window()[0].shape == (0, 6, 2)
    with pytest.raises(RuntimeError, match="vote_window=0"):
        bank.push_window()


def test_bank_state_dict_round_trip_with_weights_only():
    bank = make_bank()
    gen = torch.Generator().manual_seed(3)
    bank.update(torch.tensor([0, 5]), torch.randn(2, 3, generator=gen), torch.rand(2, 2, generator=gen),
                torch.tensor([[1, 2], [3, 4]]))
    bank.push_window()
    bank.push_window()
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = make_bank()
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    for name, value in bank.named_buffers():
        assert torch.equal(getattr(restored, name), value), name
    assert (restored.window_len, restored.window_pos) == (bank.window_len, bank.window_pos) == (2, 2)
    assert torch.equal(restored.ordered_window()[0], bank.ordered_window()[0])


def test_bank_refuses_lists_of_another_length():
    for saved, loading in ((4, 2), (2, 4)):
        with pytest.raises(RuntimeError, match="size mismatch for nn_idx"):
            make_bank(topk=loading).load_state_dict(make_bank(topk=saved).state_dict())


def test_bank_load_state_dict_names_mismatched_entry():
    with pytest.raises(RuntimeError, match="size mismatch for features"):
        make_bank(dim=4).load_state_dict(make_bank(dim=3).state_dict())
    with pytest.raises(RuntimeError, match="Missing key.*window_sim"):
        make_bank().load_state_dict({k: v for k, v in make_bank().state_dict().items() if k != "window_sim"})


def test_bank_moves_with_to():
    bank = make_bank().to(torch.float64)
    assert bank.features.dtype == torch.float64 and bank.nn_idx.dtype == torch.long


def test_bank_memory_accounting():
    bank = make_bank(num_samples=10, dim=8, topk=3, vote_window=4)
    assert bank.nbytes == 10 * MemoryBank.bytes_per_sample(dim=8, topk=3, vote_window=4)


def test_rescored_search_equals_exact_when_candidates_cover_the_true_top_k():
    gen = torch.Generator().manual_seed(1)
    queries = F.normalize(torch.randn(16, 32, generator=gen), dim=1)
    keys = F.normalize(torch.randn(300, 32, generator=gen), dim=1)
    ref_values, ref_indices = brute_topk(queries, keys, 5)
    for chunk_size, query_chunk_size in ((7, 4096), (64, 5), (1000, 1)):
        values, indices = topk_cosine_rescored(queries, keys, keys.bfloat16(), 5, candidates=40, chunk_size=chunk_size,
                                               query_chunk_size=query_chunk_size)
        assert torch.equal(indices, ref_indices)
        torch.testing.assert_close(values, ref_values)  # re-scored in float32, not bfloat16


@pytest.mark.parametrize("columns", [1000, 1003])  # whole blocks only, and a partial last block
@pytest.mark.parametrize("k", [1, 7, 25])
@pytest.mark.parametrize("levels", [None, 5])  # continuous values, and only 5 distinct values (many ties)
def test_topk_through_blocks_finds_the_same_values_as_a_full_topk(columns, k, levels):
    gen = torch.Generator().manual_seed(k)
    values = torch.randn(32, columns, generator=gen)
    if levels is not None:
        values = torch.randint(levels, (32, columns), generator=gen).float()
    top_values, top_columns = topk_through_blocks(values, k, block=8)
    reference = values.topk(k, dim=1).values
    torch.testing.assert_close(top_values.sort(dim=1, descending=True).values, reference, rtol=0, atol=0)
    assert torch.equal(values.gather(1, top_columns), top_values)
    assert all(len(set(row)) == k for row in top_columns.tolist())


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("shift", [0.0, -3.0, -100.0])  # mixed signs; most blocks negative; every value negative
def test_topk_through_blocks_ranks_negative_values_as_floats(dtype, shift):
    # The block maxima are taken over integer bit patterns, which order negative floats backwards.
    gen = torch.Generator().manual_seed(11)
    values = (torch.randn(16, 2000, generator=gen) + shift).to(dtype)
    values[0] = -torch.arange(2000, dtype=dtype)  # one row whose true top-k sits in the first blocks
    top_values, top_columns = topk_through_blocks(values, 10, block=16)
    reference = values.topk(10, dim=1).values
    assert torch.equal(top_values.sort(dim=1, descending=True).values, reference)
    assert torch.equal(values.gather(1, top_columns), top_values)
    assert top_columns[0].sort().values.tolist() == list(range(10))


def test_topk_through_blocks_accepts_a_non_contiguous_view():
    gen = torch.Generator().manual_seed(12)
    values = torch.randn(3000, 16, generator=gen).T  # strided rows: the integer view keeps the strides
    top_values, _ = topk_through_blocks(values, 5, block=16)
    assert torch.equal(top_values.sort(dim=1, descending=True).values, values.topk(5, dim=1).values)


def test_topk_through_blocks_reaches_a_maximum_in_the_partial_last_block():
    values = torch.zeros(2, 1003)
    values[0, 1001] = 5.0
    values[1, 3] = 7.0
    top_values, top_columns = topk_through_blocks(values, 1, block=8)
    assert top_columns.tolist() == [[1001], [3]] and top_values.tolist() == [[5.0], [7.0]]


def test_rescored_search_through_blocks_equals_exact_search():
    gen = torch.Generator().manual_seed(3)
    queries = F.normalize(torch.randn(8, 16, generator=gen), dim=1)
    keys = F.normalize(torch.randn(6000, 16, generator=gen), dim=1)  # 93 blocks of 64 for 20 candidates
    ref_values, ref_indices = brute_topk(queries, keys, 10)
    values, indices = topk_cosine_rescored(queries, keys, keys.bfloat16(), 10, candidates=20)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values)


def test_rescored_search_breaks_exact_ties_towards_lower_index():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])
    values, indices = topk_cosine_rescored(torch.tensor([[1.0, 0.0]]), keys, keys.bfloat16(), 2, candidates=4)
    assert indices.tolist() == [[0, 2]] and values.tolist() == [[1.0, 1.0]]


def test_bf16_bank_keeps_its_search_copy_in_step_with_the_features():
    gen = torch.Generator().manual_seed(2)
    feats = F.normalize(torch.randn(50, 8, generator=gen), dim=1)
    bank = MemoryBank(50, 8, topk=4, vote_window=0, search_precision="bf16")
    exact = MemoryBank(50, 8, topk=4, vote_window=0, search_precision="fp32")
    assert exact.search_features is None
    for b in (bank, exact):
        b.fill(feats)
    new = F.normalize(torch.randn(3, 8, generator=gen), dim=1)
    sim, idx = bank.search(new)
    bank.update(torch.tensor([4, 9, 4]), new, sim, idx)
    exact.update(torch.tensor([4, 9, 4]), new, sim, idx)
    assert torch.equal(bank.search_features, bank.features.bfloat16())
    assert torch.equal(bank.search(feats)[1], exact.search(feats)[1])
    # the copy is not saved, and is rebuilt from the loaded features
    state = bank.state_dict()
    assert "search_features" not in state
    fresh = MemoryBank(50, 8, topk=4, vote_window=0, search_precision="bf16")
    fresh.load_state_dict(state)
    assert torch.equal(fresh.search_features, bank.search_features)


def test_search_precision_auto_resolves_per_device():
    assert resolve_search_precision("fp32", torch.device("cpu")) == "fp32"
    assert resolve_search_precision("bf16", torch.device("cpu")) == "bf16"
    assert resolve_search_precision("auto", torch.device("cuda")) == "bf16"
    assert resolve_search_precision("auto", torch.device("cpu")) in ("fp32", "bf16")
    with pytest.raises(ValueError, match="bank search precision"):
        resolve_search_precision("fp8", torch.device("cpu"))


def low_rank_rows(num, dim, rank, *, seed):
    """L2-normalised rows lying in a ``rank``-dimensional subspace of ``dim`` dimensions."""
    gen = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(dim, rank, generator=gen))[0]
    return F.normalize(torch.randn(num, rank, generator=gen) @ basis.T, dim=1)


def test_rescored_search_in_a_projection_that_keeps_every_dot_product_is_exact():
    keys = low_rank_rows(500, 16, 4, seed=5)
    queries = F.normalize(keys[:9] + 0.1 * keys[9:18], dim=1)  # in the keys' subspace
    basis = torch.linalg.svd(keys, full_matrices=False).Vh[:4].T  # [16, 4] spans the keys
    ref_values, ref_indices = brute_topk(queries, keys, 6)
    values, indices = topk_cosine_rescored(queries, keys, keys @ basis, 6, candidates=12,
                                           search_queries=queries @ basis, chunk_size=64, query_chunk_size=4)
    assert torch.equal(indices, ref_indices)
    torch.testing.assert_close(values, ref_values)
    with pytest.raises(ValueError, match="search queries"):
        topk_cosine_rescored(queries, keys, keys @ basis, 6, candidates=12, search_queries=queries)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_projected_bank_fits_the_features_subspace_and_searches_like_the_full_bank(precision):
    feats = low_rank_rows(300, 16, 3, seed=6)
    bank = MemoryBank(300, 16, topk=5, vote_window=0, search_dim=4, search_precision=precision)
    full = MemoryBank(300, 16, topk=5, vote_window=0)
    bank.fill(feats)
    full.fill(feats)
    projection = bank.search_projection
    torch.testing.assert_close(projection.T @ projection, torch.eye(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(feats @ projection @ projection.T, feats, atol=1e-5, rtol=0)  # spans the data
    assert bank.search_features.shape == (300, 4)
    queries = F.normalize(feats[:20] + 0.05 * feats[20:40], dim=1)
    sim, idx = bank.search(queries)
    full_sim, full_idx = full.search(queries)
    assert torch.equal(idx, full_idx)
    torch.testing.assert_close(sim, full_sim)


def visit_rows(bank: MemoryBank, feats: Tensor, rows: list[int]) -> list[int]:
    """Search then update ``rows`` one at a time, as training visits them; returns the visits (1-based) after
    which a refit fell due. A due refit runs at the next search, which never finds one still due."""
    due = []
    for visit, row in enumerate(rows, start=1):
        sim, idx = bank.search(feats[row:row + 1])
        assert not bank.refit_due
        bank.update(torch.tensor([row]), feats[row:row + 1], sim, idx)
        if bank.refit_due:
            due.append(visit)
    return due


def test_projected_bank_refits_when_the_filled_rows_double_and_after_a_pass_over_the_bank():
    feats = low_rank_rows(64, 8, 8, seed=7)
    bank = MemoryBank(64, 8, topk=2, vote_window=0, search_dim=3)
    rows = [step % 64 if step < 64 else (step * 7) % 64 for step in range(140)]
    # filled rows 1, 2, 4, ..., 64 (doubling), then after every 64 writes
    assert visit_rows(bank, feats, rows) == [1, 2, 4, 8, 16, 32, 64, 128]
    # the last refit ran at the search of visit 129, before its row was written: 12 rows written since
    assert bank.filled_at_fit == 64 and bank.writes_since_fit == 140 - 128 and bank.refit_due is False
    bank.search(feats[:1])
    # the search copy always follows the current projection
    torch.testing.assert_close(bank.search_features, bank.features @ bank.search_projection, atol=1e-6, rtol=0)


def test_projected_bank_refits_per_pass_once_filled():
    feats = low_rank_rows(64, 8, 8, seed=7)
    bank = MemoryBank(64, 8, topk=2, vote_window=0, search_dim=3, refits_per_pass=4)
    rows = [step % 64 if step < 64 else (step * 7) % 64 for step in range(120)]
    # the doubling rule while filling (16 writes since the fit at 16 fill 32 rows), then every 64 / 4 writes
    assert visit_rows(bank, feats, rows) == [1, 2, 4, 8, 16, 32, 48, 64, 80, 96, 112]
    with pytest.raises(ValueError, match="refits_per_pass must be >= 1"):
        MemoryBank(64, 8, topk=2, vote_window=0, search_dim=3, refits_per_pass=0)


def test_projected_bank_fits_on_evenly_strided_rows_beyond_fit_rows(monkeypatch):
    """A large bank's refit reads every stride-th row only: the same directions as a fit on those rows, and
    still the data's subspace where the rows are low-rank."""
    monkeypatch.setattr("sslgraph.graph.bank.FIT_ROWS", 64)
    feats = low_rank_rows(300, 16, 3, seed=10)
    bank = MemoryBank(300, 16, topk=5, vote_window=0, search_dim=3)
    bank.fill(feats)  # 300 rows: stride 5, 60 rows read
    expected = principal_directions(feats[::5], 3)
    torch.testing.assert_close(bank.search_projection @ bank.search_projection.T, expected @ expected.T,
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(feats @ bank.search_projection @ bank.search_projection.T, feats, atol=1e-5, rtol=0)


def test_projected_bank_only_ranked_refits_at_its_next_search():
    """A bank that is only ranked among another bank's candidates (the graph method's student bank with
    ``student_search=teacher``) pays for no refit until it is searched; the search then uses a fresh fit."""
    feats = low_rank_rows(64, 8, 8, seed=9)
    bank = MemoryBank(64, 8, topk=2, vote_window=0, search_dim=3)
    bank.fill(feats)
    fitted = bank.search_projection.clone()
    rows = torch.arange(64)
    new = F.normalize(feats.flip(1) + 0.3 * feats, dim=1)  # the features move
    sim, idx = bank.rank(new, torch.stack([rows.roll(1), rows.roll(2)], dim=1))
    bank.update(rows, new, sim, idx)
    assert bank.refit_due and torch.equal(bank.search_projection, fitted)
    sim, idx = bank.search(new[:5])
    assert not bank.refit_due
    torch.testing.assert_close(bank.search_projection @ bank.search_projection.T,
                               principal_directions(new, 3) @ principal_directions(new, 3).T, atol=1e-5, rtol=0)


def test_projected_bank_state_round_trip_resumes_the_same_search():
    feats = low_rank_rows(40, 8, 8, seed=8)
    bank = MemoryBank(40, 8, topk=3, vote_window=2, search_dim=3)
    for start in range(0, 24, 6):
        sim, idx = bank.search(feats[start:start + 6])
        bank.update(torch.arange(start, start + 6), feats[start:start + 6], sim, idx)
    buffer = io.BytesIO()
    torch.save(bank.state_dict(), buffer)
    buffer.seek(0)
    restored = MemoryBank(40, 8, topk=3, vote_window=2, search_dim=3)
    restored.load_state_dict(torch.load(buffer, weights_only=True))
    assert torch.equal(restored.search_projection, bank.search_projection)
    assert torch.equal(restored.search_features, bank.search_features)
    assert (restored.filled_at_fit, restored.writes_since_fit) == (bank.filled_at_fit, bank.writes_since_fit)
    assert restored.refit_due and bank.refit_due  # 12 rows written since the fit at 12 filled: due, not yet run
    for b in (bank, restored):  # the next visits (and the refit they trigger) agree
        sim, idx = b.search(feats[24:40])
        b.update(torch.arange(24, 40), feats[24:40], sim, idx)
    assert torch.equal(restored.nn_idx, bank.nn_idx) and torch.equal(restored.search_projection, bank.search_projection)


def test_projected_bank_rejects_bad_widths_and_backends():
    with pytest.raises(ValueError, match="search_dim=8 must be in"):
        MemoryBank(10, 8, topk=2, vote_window=0, search_dim=8)
    with pytest.raises(ValueError, match="exact backend"):
        MemoryBank(10, 8, topk=2, vote_window=0, search_dim=4, backend="faiss")
    with pytest.raises(RuntimeError, match="without search_dim"):
        MemoryBank(10, 8, topk=2, vote_window=0).fit_search_projection()


@pytest.mark.parametrize("precision", ["bf16", "fp32"])
def test_projected_bank_memory_accounting(precision):
    bank = MemoryBank(10, 8, topk=3, vote_window=4, search_dim=2, search_precision=precision)
    projection = 8 * 2 * 4
    assert bank.nbytes == 10 * MemoryBank.bytes_per_sample(dim=8, topk=3, vote_window=4, search_copy=True,
                                                           search_dim=2, search_precision=precision) + projection


def test_topk_among_ranks_each_querys_rows_exactly_with_ties_to_the_lower_index():
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [1.0, 0.0], [0.8, 0.6]])
    queries = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    rows = torch.tensor([[3, 1, 4, 0], [0, 4, 2, 3]])  # any order; row 3 ties row 0 for the first query
    values, indices = topk_among(queries, keys, rows, 3)
    assert indices.tolist() == [[0, 3, 4], [2, 4, 0]]
    torch.testing.assert_close(values, torch.tensor([[1.0, 1.0, 0.8], [0.8, 0.6, 0.0]]))
    with pytest.raises(ValueError, match="C >= k=5"):
        topk_among(queries, keys, rows, 5)


@pytest.mark.parametrize(("kwargs", "num_candidates"), [({"search_precision": "fp32"}, 4),  # the top-k itself
                                                        ({"search_precision": "bf16"}, 8),  # 2 x topk
                                                        ({"search_precision": "bf16", "search_dim": 6}, 16)])
def test_bank_search_returns_candidates_that_rank_to_its_own_lists(kwargs, num_candidates):
    gen = torch.Generator().manual_seed(5)
    feats = F.normalize(torch.randn(5000, 8, generator=gen), dim=1)
    bank = MemoryBank(5000, 8, topk=4, vote_window=0, **kwargs)
    bank.fill(feats)
    queries = F.normalize(feats[:16] + 0.1 * torch.randn(16, 8, generator=gen), dim=1)
    sim, idx, candidates = bank.search_with_candidates(queries)
    assert candidates.shape == (16, num_candidates)
    assert torch.equal(bank.search(queries)[1], idx)
    rank_sim, rank_idx = bank.rank(queries, candidates)
    assert torch.equal(rank_idx, idx)
    torch.testing.assert_close(rank_sim, sim)
    # A bank of other features ranks the same rows in its own features, exactly.
    other = MemoryBank(5000, 8, topk=2, vote_window=0)
    other.fill(feats.flip(1))
    expected = (queries @ feats.flip(1).T).gather(1, candidates).topk(2, dim=1)
    other_sim, other_idx = other.rank(queries, candidates)
    assert torch.equal(other_idx, candidates.gather(1, expected.indices))
    torch.testing.assert_close(other_sim, expected.values)
