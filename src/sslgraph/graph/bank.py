"""Memory bank over the training set: latest feature of every sample, its current top-k list and a vote window.

Each training step searches the batch's L2-normalised features against the whole bank (top-k of dot
products), then overwrites the batch rows. The search is the graph method's largest cost at N = 50,000, so
it may run in bfloat16 where the hardware multiplies it natively (2-3x faster): a bfloat16 copy of the bank
yields ``2 k`` candidates per query, which are re-scored exactly in float32 (:func:`topk_cosine_rescored`;
on a trained ResNet-18's features 99.9 % of the lists equal the exact ones). With ``search_dim`` the copy holds
only the bank's ``search_dim`` leading principal directions (of its uncentred second moment, refitted as the bank
fills and ``refits_per_pass`` times per pass over it, at the search after one falls due), and ``4 k`` candidates
are re-scored: the product shrinks with the width
(at 128 of 512 dimensions, 99.9-100 % of a trained ResNet-18's lists equal the exact ones, 96 % after its first
epoch). At each epoch end the current neighbour lists are copied into a ring of the last ``V`` epochs, which
the AdaSim vote (:mod:`sslgraph.graph.bootstrap`) reads.

Memory per sample, with ``d`` the feature width, ``k`` the list length and ``V`` the window:
``4 d`` (features, float32) + ``2 s`` (bfloat16 search copy of width ``s``, when used) + ``1`` (filled flag) + ``12 k``
(current list: int64 index + float32 similarity) + ``12 k V`` (window) bytes; see :meth:`MemoryBank.bytes_per_sample`.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import torch
from torch import Tensor, nn

from sslgraph.choices import BankBackend, SearchPrecision, check_option, options
from sslgraph.errors import ConfigError
from sslgraph.utils.misc import native_bf16

BACKENDS = options(BankBackend)
# Candidates per wanted neighbour that the bfloat16 search hands to the exact re-scoring, and the same for a
# search in the leading principal directions (which drops the rest of each vector, so it needs more).
RESCORE_FACTOR = 2
PROJECTED_RESCORE_FACTOR = 4
# Queries whose candidate rows are gathered and scored together in the exact re-scoring (:func:`topk_among`).
_RANK_QUERIES = 64
# Rows whose second moment a projection refit reads at most (evenly strided): a few thousand rows estimate the
# leading directions of a d x d moment well, and the refit's product then no longer grows with the bank.
FIT_ROWS = 16_384


def resolve_search_precision(precision: SearchPrecision, device: torch.device) -> SearchPrecision:
    """``auto`` -> ``bf16`` where native on ``device``, else ``fp32``."""
    check_option(SearchPrecision, precision, name="bank search precision")
    if precision == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return precision


def topk_cosine(queries: Tensor, keys: Tensor, k: int, *, chunk_size: int = 65_536,
                query_chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Exact top-``k`` dot products of each query against all keys, sorted descending.

    Keys are scanned ``chunk_size`` rows at a time and merged into a running top-k, queries
    ``query_chunk_size`` rows at a time, so at most ``query_chunk_size x chunk_size`` similarities exist at
    once. Among equal values the lower key index comes first, exactly as a stable descending sort would
    order them, so the result does not depend on the chunking. Inputs are expected L2-normalised
    (the dot product is then the cosine similarity).
    """
    if queries.dim() != 2 or keys.dim() != 2 or queries.shape[1] != keys.shape[1]:
        raise ValueError(f"topk_cosine: queries {tuple(queries.shape)} and keys {tuple(keys.shape)} must be "
                         f"[B, d] and [N, d] with the same d")
    if not 1 <= k <= keys.shape[0]:
        raise ValueError(f"topk_cosine: k={k} must be in [1, number of keys={keys.shape[0]}]")
    if chunk_size < 1 or query_chunk_size < 1:
        raise ValueError(f"topk_cosine: chunk sizes must be >= 1, got {chunk_size}, {query_chunk_size}")
    queries = queries.to(device=keys.device, dtype=keys.dtype)
    values, indices = [], []
    for start in range(0, queries.shape[0], query_chunk_size):
        v, i = _topk_over_keys(queries[start:start + query_chunk_size], keys, k, chunk_size=chunk_size)
        values.append(v)
        indices.append(i)
    if not values:
        empty = queries.new_zeros((0, k))
        return empty, empty.long()
    return torch.cat(values), torch.cat(indices)


def topk_cosine_rescored(queries: Tensor, keys: Tensor, search_keys: Tensor, k: int, *,
                         candidates: int, search_queries: Tensor | None = None, chunk_size: int = 65_536,
                         query_chunk_size: int = 4096) -> tuple[Tensor, Tensor]:
    """Top-``k`` dot products of each query against ``keys``, found among the ``candidates`` best of a
    cheaper copy ``search_keys`` and re-scored exactly in ``keys``' dtype.

    ``search_keys`` is ``keys`` in a lower precision, or a projection of them (``[N, s]``; then
    ``search_queries`` are the queries under the same projection). Ties in the exact scores go to the lower
    key index, as in :func:`topk_cosine`. The result equals the exact one whenever every true top-``k`` key is
    among the search's top-``candidates``. Queries go ``query_chunk_size`` rows at a time, as in
    :func:`topk_cosine`.
    """
    values, indices, _ = topk_cosine_rescored_with_candidates(
        queries, keys, search_keys, k, candidates=candidates, search_queries=search_queries, chunk_size=chunk_size,
        query_chunk_size=query_chunk_size)
    return values, indices


def topk_cosine_rescored_with_candidates(queries: Tensor, keys: Tensor, search_keys: Tensor, k: int, *,
                                         candidates: int, search_queries: Tensor | None = None,
                                         chunk_size: int = 65_536,
                                         query_chunk_size: int = 4096) -> tuple[Tensor, Tensor, Tensor]:
    """:func:`topk_cosine_rescored`, also returning the re-scored candidates ``[B, candidates]`` (ascending key
    indices), which another bank over the same samples can rank in its own features (:func:`topk_among`)."""
    search_queries = queries if search_queries is None else search_queries
    if search_keys.shape[0] != keys.shape[0] or search_queries.shape != (queries.shape[0], search_keys.shape[1]):
        raise ValueError(f"topk_cosine_rescored: keys {tuple(keys.shape)}, search_keys "
                         f"{tuple(search_keys.shape)} and search queries {tuple(search_queries.shape)} do not "
                         f"match (same number of keys; search queries as wide as the search keys)")
    if queries.shape[0] > query_chunk_size:
        parts = [topk_cosine_rescored_with_candidates(
                     queries[start:start + query_chunk_size], keys, search_keys, k, candidates=candidates,
                     search_queries=search_queries[start:start + query_chunk_size], chunk_size=chunk_size)
                 for start in range(0, queries.shape[0], query_chunk_size)]
        return tuple(torch.cat([part[i] for part in parts]) for i in range(3))  # type: ignore[return-value]
    candidates = min(max(candidates, k), keys.shape[0])
    low = search_queries.to(device=search_keys.device, dtype=search_keys.dtype)
    # Candidates need no tie-breaking (the exact re-scoring orders them), so a plain top-k per key chunk.
    cand = torch.empty((low.shape[0], 0), dtype=torch.long, device=keys.device)
    best = torch.empty((low.shape[0], 0), dtype=search_keys.dtype, device=keys.device)
    for start in range(0, keys.shape[0], chunk_size):
        sims = low @ search_keys[start:start + chunk_size].T
        top_values, top_indices = topk_through_blocks(sims, min(candidates, sims.shape[1]))
        best = torch.cat([best, top_values], dim=1)
        cand = torch.cat([cand, top_indices + start], dim=1)
        if best.shape[1] > candidates:
            best, keep = best.topk(candidates, dim=1)
            cand = cand.gather(1, keep)
    cand = cand.sort(dim=1).values
    values, indices = topk_among(queries, keys, cand, k, sorted_rows=True)
    return values, indices, cand


def topk_among(queries: Tensor, keys: Tensor, rows: Tensor, k: int, *,
               sorted_rows: bool = False) -> tuple[Tensor, Tensor]:
    """Top-``k`` exact dot products of each query against its own ``rows`` of ``keys`` (``rows [B, C]``, distinct
    key indices per query, ``C >= k``), sorted descending, ties to the lower key index as in :func:`topk_cosine`.
    ``sorted_rows``: each row of ``rows`` is already ascending."""
    if rows.dim() != 2 or rows.shape[0] != queries.shape[0] or not 1 <= k <= rows.shape[1]:
        raise ValueError(f"topk_among: rows {tuple(rows.shape)} must be [B={queries.shape[0]}, C] with C >= k={k}")
    if not sorted_rows:
        rows = rows.sort(dim=1).values  # index order first, so the stable sort below keeps lower indices first
    queries = queries.to(device=keys.device, dtype=keys.dtype)
    # index_select gathers the candidate rows faster than keys[rows] on a CPU (7.6 against 13.0 ms for 256 x 80
    # rows of a 50,000 x 512 bank), and 64 queries at a time the gathered rows stay in cache for the products
    # (0.7 against 1.2 ms for 256 x 40 rows of a 50,000 x 256 bank on 2 cores).
    exact = torch.cat([torch.einsum("bd,bcd->bc", part_queries,
                                    keys.index_select(0, part.flatten()).view(*part.shape, keys.shape[1]))
                       for part_queries, part in zip(queries.split(_RANK_QUERIES), rows.split(_RANK_QUERIES))])
    values, order = exact.sort(dim=1, descending=True, stable=True)
    return values[:, :k], rows.gather(1, order[:, :k])


# Integers of the same width as a float type: for floats >= 0 their bit patterns, read as signed integers, order
# exactly as the floats do (and every negative float reads as a negative integer), and an integer maximum runs
# several times faster on a CPU than a bfloat16 one (1.1 against 6 ms for 256 x 50,000).
_SAME_WIDTH_INT = {torch.bfloat16: torch.int16, torch.float16: torch.int16, torch.float32: torch.int32,
                   torch.float64: torch.int64}


def topk_through_blocks(values: Tensor, k: int, *, block: int = 64) -> tuple[Tensor, Tensor]:
    """The ``k`` largest entries of each row of ``values`` (values, columns), ties in any order.

    A row's top ``k`` entries lie in the ``k`` blocks of ``block`` columns with the largest maxima (an entry
    outside them would be beaten by those ``k`` maxima), so a top-k over the block maxima and then over the
    ``k * block`` entries of the chosen blocks finds them: at 50,000 columns and k = 20 that reads the row once
    for the maxima instead of running a top-k over all of it (8.5 -> 3 ms for 256 rows on 2 cores). The chosen
    blocks are copied whole (one index per block, not per entry: 6.2 -> 5.4 ms at k = 40 for 256 x 50,000). Both
    top-k's run over the values' bit patterns as integers, which rank non-negative floats exactly and every
    negative one below them; a row whose ``k``-th best block has a negative maximum (where that ranking may be
    wrong) takes a plain top-k instead.
    """
    rows, columns = values.shape
    blocks = columns // block
    if blocks < 4 * k:
        top = values.topk(k, dim=1)
        return top.values, top.indices
    as_int = _SAME_WIDTH_INT.get(values.dtype)  # a same-width view keeps shape and strides: any layout works
    keys = values.view(as_int) if as_int is not None else values
    tiles = keys[:, :blocks * block].unflatten(1, (blocks, block))  # a view, whatever the strides
    best_maxima, chosen = tiles.amax(dim=2).topk(k, dim=1)  # [rows, k]
    picked = tiles[torch.arange(rows, device=values.device).unsqueeze(1), chosen].flatten(1)  # [rows, k * block]
    tail = keys[:, blocks * block:]  # the last partial block, always a candidate
    top = torch.cat([picked, tail], dim=1).topk(k, dim=1)
    top_values = top.values.view(values.dtype) if as_int is not None else top.values
    in_block = top.indices < k * block
    top_columns = torch.where(in_block, chosen.gather(1, (top.indices // block).clamp_max(k - 1)) * block
                              + top.indices % block, top.indices - k * block + blocks * block)
    if as_int is not None:
        unsure = (best_maxima[:, -1] < 0).nonzero().squeeze(1)
        if unsure.numel():
            plain = values[unsure].topk(k, dim=1)
            top_values[unsure], top_columns[unsure] = plain.values, plain.indices  # both fresh tensors of this call
    return top_values, top_columns


def principal_directions(rows: Tensor, dim: int) -> Tensor:
    """``[d, dim]``: the ``dim`` leading eigenvectors of the uncentred second moment ``rows^T rows``, the
    directions that keep most of the rows' dot products (largest eigenvalue first). Zero rows add nothing."""
    _, vectors = torch.linalg.eigh(rows.T @ rows)  # ascending eigenvalues
    return vectors[:, -dim:].flip(1)


def topk_cosine_search(queries: Tensor, keys: Tensor, k: int, *, precision: SearchPrecision = "fp32",
                       chunk_size: int = 65_536, search_dim: int | None = None) -> tuple[Tensor, Tensor]:
    """:func:`topk_cosine`, or with ``precision`` ``bf16`` (``auto``: where native) a bfloat16 search whose
    ``RESCORE_FACTOR k`` candidates are re-scored exactly (:func:`topk_cosine_rescored`). ``search_dim``
    searches the keys' ``search_dim`` principal directions instead (in ``precision``) and re-scores
    ``PROJECTED_RESCORE_FACTOR k`` candidates, as a :class:`MemoryBank` with ``search_dim`` does."""
    if search_dim is not None:
        if not 1 <= search_dim < keys.shape[1]:
            raise ValueError(f"topk_cosine_search: search_dim={search_dim} must be in [1, {keys.shape[1]})")
        keys = keys.float()
        projection = principal_directions(keys, search_dim)
        low = torch.bfloat16 if resolve_search_precision(precision, keys.device) == "bf16" else torch.float32
        return topk_cosine_rescored(queries, keys, (keys @ projection).to(low), k,
                                    candidates=PROJECTED_RESCORE_FACTOR * k,
                                    search_queries=queries.to(keys.device, torch.float32) @ projection,
                                    chunk_size=chunk_size)
    if resolve_search_precision(precision, keys.device) == "bf16":
        return topk_cosine_rescored(queries, keys, keys.to(torch.bfloat16), k, candidates=RESCORE_FACTOR * k,
                                    chunk_size=chunk_size)
    return topk_cosine(queries, keys, k, chunk_size=chunk_size)


def _topk_over_keys(queries: Tensor, keys: Tensor, k: int, *, chunk_size: int) -> tuple[Tensor, Tensor]:
    best_val = queries.new_empty((queries.shape[0], 0))
    best_idx = torch.empty((queries.shape[0], 0), dtype=torch.long, device=keys.device)
    for start in range(0, keys.shape[0], chunk_size):
        sims = queries @ keys[start:start + chunk_size].T
        idx = _lowest_index_topk(sims, k) + start
        val = sims.gather(1, idx - start)
        # Earlier chunks hold lower indices, so a stable sort of [running, chunk (index order)] keeps the
        # lower index first among equal values.
        val, order = torch.cat([best_val, val], dim=1).sort(dim=1, descending=True, stable=True)
        idx = torch.cat([best_idx, idx], dim=1).gather(1, order)
        best_val, best_idx = val[:, :k], idx[:, :k]
    return best_val, best_idx


def _lowest_index_topk(sims: Tensor, k: int) -> Tensor:
    """Column indices (ascending) of the ``k`` largest entries per row (all columns when there are at most
    ``k``); ties at the cut go to the lower columns."""
    num = sims.shape[1]
    if k >= num:
        return torch.arange(num, device=sims.device).expand(sims.shape[0], num)
    # One extra value shows whether the k-th and (k+1)-th are equal; only such rows need the tie-aware pass.
    top = sims.topk(k + 1, dim=1)
    indices = top.indices[:, :k]
    tied = top.values[:, k - 1] == top.values[:, k]
    if bool(tied.any()):
        rows = tied.nonzero().squeeze(1)
        indices = indices.clone()
        indices[rows] = _tie_aware_topk(sims[rows], k, threshold=top.values[rows, k - 1:k])
    return indices.sort(dim=1).values


def _tie_aware_topk(sims: Tensor, k: int, *, threshold: Tensor) -> Tensor:
    """Everything above ``threshold`` plus the lowest columns equal to it, ``k`` per row."""
    above = sims > threshold
    at = sims == threshold
    needed = k - above.sum(dim=1, keepdim=True)
    take = above | (at & (at.cumsum(dim=1) <= needed))
    # Exactly k entries per row are taken; topk over the 0/1 mask returns their columns.
    return take.to(torch.uint8).topk(k, dim=1).indices


def last_occurrence(indices: Tensor) -> Tensor:
    """Positions in ``indices`` that hold the last occurrence of their value (ascending positions)."""
    unique, inverse = torch.unique(indices, return_inverse=True)
    positions = torch.arange(indices.shape[0], device=indices.device)
    last = torch.full((unique.shape[0],), -1, dtype=torch.long, device=indices.device)
    return last.scatter_reduce(0, inverse, positions, reduce="amax").sort().values


class MemoryBank(nn.Module):
    """Features, top-k lists and a ring of the last ``vote_window`` epochs' lists for ``num_samples`` samples.

    ``nn_idx`` is ``-1`` for samples not visited yet; ``vote_window=0`` keeps no window (a bank that is only
    searched). ``search_precision="bf16"`` keeps a bfloat16 copy of the features for the search (a non-persistent
    buffer, rebuilt after loading) and re-scores its candidates in float32. ``search_dim`` narrows that copy to
    the features' leading principal directions (``search_projection``, saved, so a resumed run searches as
    the uninterrupted one): a refit falls due whenever the filled rows have doubled since the last fit and after
    every ``num_samples / refits_per_pass`` rows written, and runs at the next search, so a bank that is only
    ranked (:meth:`rank`) pays for no refit until it is searched. Every process holds an identical copy:
    callers gather the batch across processes before :meth:`update`. The tensors are registered buffers, so
    ``state_dict``/``load_state_dict`` (shape-checked) and ``.to(device)`` come from ``nn.Module``; the ring
    position travels as extra state.
    """

    # The per-sample neighbour lists, each ``topk`` long in its last dimension.
    LIST_BUFFERS = ("nn_idx", "nn_sim", "window_idx", "window_sim")

    def __init__(self, num_samples: int, dim: int, *, topk: int, vote_window: int, backend: BankBackend = "exact",
                 chunk_size: int = 65_536, search_precision: SearchPrecision = "fp32", search_dim: int | None = None,
                 refits_per_pass: int = 1, device: torch.device | str | None = None) -> None:
        super().__init__()
        check_option(BankBackend, backend, name="MemoryBank: backend")
        if not 1 <= topk <= num_samples:
            raise ValueError(f"MemoryBank: topk={topk} must be in [1, num_samples={num_samples}]")
        if vote_window < 0:
            raise ValueError(f"MemoryBank: vote_window must be >= 0, got {vote_window}")
        if search_dim is not None and not 1 <= search_dim < dim:
            raise ValueError(f"MemoryBank: search_dim={search_dim} must be in [1, dim={dim}) (None: full width)")
        if refits_per_pass < 1:
            raise ValueError(f"MemoryBank: refits_per_pass must be >= 1, got {refits_per_pass}")
        if search_dim is not None and backend != "exact":
            raise ValueError(f"MemoryBank: search_dim needs the exact backend, got {backend!r}")
        self.num_samples, self.dim, self.topk, self.vote_window = num_samples, dim, topk, vote_window
        self.backend, self.chunk_size, self.search_dim = backend, chunk_size, search_dim
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.search_precision = resolve_search_precision(search_precision, device)
        self.register_buffer("features", torch.zeros(num_samples, dim, device=device))
        # The search copy is derived from ``features``: never saved, refreshed after loading.
        search_copy = None
        if search_dim is not None:
            search_dtype = torch.bfloat16 if self.search_precision == "bf16" else torch.float32
            search_copy = torch.zeros(num_samples, search_dim, dtype=search_dtype, device=device)
        elif self.search_precision == "bf16" and backend == "exact":
            search_copy = torch.zeros(num_samples, dim, dtype=torch.bfloat16, device=device)
        self.register_buffer("search_features", search_copy, persistent=False)
        projection = torch.eye(dim, search_dim, device=device) if search_dim is not None else None
        self.register_buffer("search_projection", projection)
        self.filled_at_fit = 0
        self.writes_since_fit = 0
        # Rows written between two refits of a filled bank; a refit due runs at the next search.
        self.refit_every = -(-num_samples // refits_per_pass)
        self.refit_due = False
        self.register_buffer("filled", torch.zeros(num_samples, dtype=torch.bool, device=device))
        self.register_buffer("nn_idx", torch.full((num_samples, topk), -1, dtype=torch.long, device=device))
        self.register_buffer("nn_sim", torch.zeros(num_samples, topk, device=device))
        self.register_buffer("window_idx", torch.full((vote_window, num_samples, topk), -1, dtype=torch.long,
                                                      device=device))
        self.register_buffer("window_sim", torch.zeros(vote_window, num_samples, topk, device=device))
        self.window_len = 0
        self.window_pos = 0

    @property
    def device(self) -> torch.device:
        return self.features.device

    @staticmethod
    def bytes_per_sample(*, dim: int, topk: int, vote_window: int, search_copy: bool = False,
                         search_dim: int | None = None, search_precision: SearchPrecision = "bf16") -> int:
        """Bytes per sample; ``search_copy``: a search copy, ``search_dim`` wide if given, in bfloat16 or (a
        projected copy with ``search_precision="fp32"``) float32; the ``dim x search_dim`` projection itself is
        not per sample and not counted."""
        width = 4 if search_dim is not None and search_precision == "fp32" else 2
        copy = width * (search_dim or dim) if search_copy else 0
        return 4 * dim + copy + 1 + 12 * topk * (1 + vote_window)

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def search(self, queries: Tensor) -> tuple[Tensor, Tensor]:
        """``(sim [B, k], idx [B, k])``: the bank's top-k for each (L2-normalised) query row."""
        sim, idx, _ = self.search_with_candidates(queries)
        return sim, idx

    def search_with_candidates(self, queries: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """:meth:`search`, also returning the rows it ranked exactly (``[B, C]``): the search copy's candidates,
        or the top-k rows themselves where the whole bank was ranked exactly. A bank over the same samples with
        similar features can rank them instead of searching (:meth:`rank`)."""
        queries = queries.to(device=self.device, dtype=self.features.dtype)
        if self.backend == "faiss":
            sim, idx = _faiss_search(queries, self.features, self.topk)
            return sim, idx, idx
        if self.search_projection is not None:
            if self.refit_due:
                self.fit_search_projection()
            return topk_cosine_rescored_with_candidates(
                queries, self.features, self.search_features, self.topk,
                candidates=PROJECTED_RESCORE_FACTOR * self.topk, search_queries=queries @ self.search_projection,
                chunk_size=self.chunk_size)
        if self.search_features is not None:
            return topk_cosine_rescored_with_candidates(queries, self.features, self.search_features, self.topk,
                                                        candidates=RESCORE_FACTOR * self.topk,
                                                        chunk_size=self.chunk_size)
        sim, idx = topk_cosine(queries, self.features, self.topk, chunk_size=self.chunk_size)
        return sim, idx, idx

    def rank(self, queries: Tensor, rows: Tensor) -> tuple[Tensor, Tensor]:
        """``(sim [B, k], idx [B, k])``: each query's top-k among its own ``rows`` of the bank (``[B, C]``, distinct
        per query, ``C >= topk``), scored exactly: a search restricted to another bank's candidates."""
        queries = queries.to(device=self.device, dtype=self.features.dtype)
        return topk_among(queries, self.features, rows.to(self.device), self.topk)

    def update(self, indices: Tensor, features: Tensor, nn_sim: Tensor, nn_idx: Tensor) -> None:
        """Overwrite the rows ``indices``; for an index given twice the last occurrence wins."""
        indices = indices.to(self.device, torch.long)
        batch = indices.shape[0]
        lists = (batch, self.topk)
        if features.shape != (batch, self.dim) or nn_sim.shape != lists or nn_idx.shape != lists:
            raise ValueError(f"MemoryBank.update: expected features [{batch}, {self.dim}] and nn lists "
                             f"[{batch}, {self.topk}], got {tuple(features.shape)}, {tuple(nn_sim.shape)}, "
                             f"{tuple(nn_idx.shape)}")
        keep = last_occurrence(indices)
        rows = indices[keep]
        new_features = features.to(self.device, self.features.dtype)[keep]
        self.features[rows] = new_features
        if self.search_features is not None:
            self.search_features[rows] = self._search_copy_of(new_features)
        self.nn_sim[rows] = nn_sim.to(self.device, self.nn_sim.dtype)[keep]
        self.nn_idx[rows] = nn_idx.to(self.device, torch.long)[keep]
        self.filled[rows] = True
        if self.search_projection is not None:
            self.writes_since_fit += int(rows.shape[0])
            # Each written row fills at most one new row, so the filled rows can only have doubled once at least
            # ``filled_at_fit`` rows were written: the mask is counted only then, not at every step.
            if not self.refit_due and (self.writes_since_fit >= self.refit_every or (
                    self.writes_since_fit >= max(self.filled_at_fit, 1)
                    and int(self.filled.sum()) >= 2 * self.filled_at_fit)):
                self.refit_due = True

    def fit_search_projection(self) -> None:
        """Point the search at the ``search_dim`` leading eigenvectors of the features' second moment
        ``F^T F`` (unfilled rows are zero and add nothing; over at most :data:`FIT_ROWS` evenly strided rows),
        the directions that keep most of the dot products, and rebuild the search copy."""
        if self.search_projection is None:
            raise RuntimeError("MemoryBank.fit_search_projection: this bank was built without search_dim")
        filled = int(self.filled.sum())
        # While at most half the bank is filled the filled rows are copied out (fewer to multiply); beyond that
        # the product runs over every row, the unfilled ones being zero.
        rows = self.features if 2 * filled > self.num_samples else self.features[self.filled]
        # Every stride-th row (no random draw: every process and a resumed run fit the same directions).
        stride = -(-rows.shape[0] // FIT_ROWS)
        self.search_projection.copy_(principal_directions(rows[::stride], self.search_dim))
        self.filled_at_fit, self.writes_since_fit, self.refit_due = filled, 0, False
        self._refresh_search_copy()

    def _search_copy_of(self, features: Tensor) -> Tensor:
        if self.search_projection is not None:
            features = features @ self.search_projection
        return features.to(self.search_features.dtype)

    def fill(self, features: Tensor) -> None:
        """Initial pass: every sample's feature (neighbour lists are left to the first visits)."""
        if features.shape != self.features.shape:
            raise ValueError(f"MemoryBank.fill: expected features {tuple(self.features.shape)}, "
                             f"got {tuple(features.shape)}")
        self.features.copy_(features)
        self.filled.fill_(True)
        if self.search_projection is not None:
            self.fit_search_projection()  # refreshes the search copy
        else:
            self._refresh_search_copy()

    def _refresh_search_copy(self) -> None:
        if self.search_features is not None:
            self.search_features.copy_(self._search_copy_of(self.features))

    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._refresh_search_copy()

    def push_window(self) -> None:
        """End of epoch: the current lists replace the oldest window entry."""
        if self.vote_window == 0:
            raise RuntimeError("MemoryBank.push_window: this bank was built with vote_window=0")
        self.window_idx[self.window_pos].copy_(self.nn_idx)
        self.window_sim[self.window_pos].copy_(self.nn_sim)
        self.window_pos = (self.window_pos + 1) % self.vote_window
        self.window_len = min(self.window_len + 1, self.vote_window)

    def ordered_window(self) -> tuple[Tensor, Tensor]:
        """``(idx [W, N, k], sim [W, N, k])``, oldest epoch first, ``W = window_len``."""
        oldest = self.window_pos if self.window_len == self.vote_window else 0
        order = (torch.arange(self.window_len, device=self.device) + oldest) % max(self.vote_window, 1)
        return self.window_idx.index_select(0, order), self.window_sim.index_select(0, order)

    def get_extra_state(self) -> dict[str, int]:
        return {"window_len": self.window_len, "window_pos": self.window_pos,
                "filled_at_fit": self.filled_at_fit, "writes_since_fit": self.writes_since_fit,
                "refit_due": int(self.refit_due)}

    def set_extra_state(self, state: dict[str, int]) -> None:
        self.window_len, self.window_pos = int(state["window_len"]), int(state["window_pos"])
        # Checkpoints written before the projected search have no fit counters: refit at the next update.
        self.filled_at_fit = int(state.get("filled_at_fit", 0))
        self.writes_since_fit = int(state.get("writes_since_fit", 0))
        # Checkpoints written before refits waited for the next search had refitted at once.
        self.refit_due = bool(state.get("refit_due", 0))


def _faiss_search(queries: Tensor, features: Tensor, k: int) -> tuple[Tensor, Tensor]:
    """Brute-force inner-product top-k with faiss (the kernel ``IndexFlatIP.search`` runs), without copying
    the bank into an index at every step: CPU tensors are passed as zero-copy NumPy views."""
    try:
        import faiss
    except ImportError:
        raise ConfigError("method.bank_backend: faiss needs the faiss package; install the extra: "
                          "pip install 'sslgraph[faiss]' (or use method.bank_backend=exact)") from None
    queries, features = queries.float().contiguous(), features.float().contiguous()
    if features.is_cuda:
        if not hasattr(faiss, "StandardGpuResources"):
            raise ConfigError("method.bank_backend: the bank is on a GPU but this faiss build has no GPU "
                              "support; install faiss-gpu or use method.bank_backend=exact")
        import faiss.contrib.torch_utils  # noqa: F401  (lets faiss.knn_gpu take torch tensors)

        sim, idx = faiss.knn_gpu(_faiss_gpu_resources(), queries, features, k,
                                 metric=faiss.METRIC_INNER_PRODUCT, device=features.device.index or 0)
        return sim, idx
    sim, idx = faiss.knn(queries.numpy(), features.numpy(), k, metric=faiss.METRIC_INNER_PRODUCT)
    return torch.from_numpy(sim), torch.from_numpy(idx)


@cache
def _faiss_gpu_resources() -> Any:
    """One set of faiss GPU resources (scratch memory, streams) per process, created on first use."""
    import faiss

    return faiss.StandardGpuResources()
