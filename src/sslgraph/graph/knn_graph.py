"""kNN graph accumulated over visits: each node keeps the edges of its last ``V`` visits, ``E`` per visit.

Every visit of node ``i`` (a training step that sees ``i``, or a held-out pass) gives ``E`` neighbours; they
overwrite the slot of the visit ``V`` visits earlier, so the graph holds a FIFO of ``E x V`` slots per node.
Neighbours that recur across visits fill several slots: that count is the edge's multiplicity. Empty slots
hold ``-1`` and are not edges (the reference's zero-initialised buffers turned them into edges to node 0).
Memory is ``O(N E V)``: ``12 E V + 8`` bytes per node (see :meth:`KNNGraph.bytes_per_node`).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from sslgraph.choices import EdgeWeight, check_option


def nearest_non_self(nn_idx: Tensor, nn_sim: Tensor, self_idx: Tensor, num_edges: int) -> tuple[Tensor, Tensor]:
    """First ``num_edges`` entries of each sorted list that are neither the row's own index nor ``-1``.

    Rows with fewer such entries are padded with index ``-1`` and similarity ``0``.
    """
    if nn_idx.shape != nn_sim.shape or nn_idx.dim() != 2 or self_idx.shape != nn_idx.shape[:1]:
        raise ValueError(f"nearest_non_self: expected nn_idx, nn_sim [B, k] and self_idx [B], got "
                         f"{tuple(nn_idx.shape)}, {tuple(nn_sim.shape)}, {tuple(self_idx.shape)}")
    batch = nn_idx.shape[0]
    keep = (nn_idx != self_idx.to(nn_idx.device).unsqueeze(1)) & (nn_idx >= 0)
    rank = keep.long().cumsum(dim=1) - 1
    # Entries not kept go to a spare last column that is dropped afterwards.
    column = torch.where(keep & (rank < num_edges), rank, num_edges)
    idx = torch.full((batch, num_edges + 1), -1, dtype=torch.long, device=nn_idx.device)
    sim = torch.zeros((batch, num_edges + 1), dtype=nn_sim.dtype, device=nn_sim.device)
    idx.scatter_(1, column, torch.where(column < num_edges, nn_idx, -1))
    sim.scatter_(1, column, torch.where(column < num_edges, nn_sim, 0.0))
    return idx[:, :num_edges], sim[:, :num_edges]


class KNNGraph(nn.Module):
    """Per-node FIFO of the last ``visits`` visits' ``edges_per_node`` neighbours, in registered buffers (so
    ``state_dict``/``load_state_dict`` with shape checks and ``.to(device)`` come from ``nn.Module``).

    ``neighbour_nodes=None``: neighbours are nodes of this graph (self loops are never edges). An integer:
    neighbours index another node set of that size (the held-out graph, whose neighbours are training nodes).
    """

    def __init__(self, num_nodes: int, *, edges_per_node: int, visits: int, neighbour_nodes: int | None = None,
                 device: torch.device | str | None = None) -> None:
        super().__init__()
        if edges_per_node < 1 or visits < 1:
            raise ValueError(f"KNNGraph: edges_per_node and visits must be >= 1, got {edges_per_node}, {visits}")
        device = torch.device(device) if device is not None else torch.device("cpu")
        self.num_nodes, self.edges_per_node, self.num_visits = num_nodes, edges_per_node, visits
        self.neighbour_nodes = neighbour_nodes
        self.register_buffer("slots", torch.full((num_nodes, visits, edges_per_node), -1, dtype=torch.long,
                                                 device=device))
        self.register_buffer("slot_sim", torch.zeros(num_nodes, visits, edges_per_node, device=device))
        self.register_buffer("visits", torch.zeros(num_nodes, dtype=torch.long, device=device))

    @property
    def device(self) -> torch.device:
        return self.slots.device

    @property
    def num_neighbour_nodes(self) -> int:
        return self.num_nodes if self.neighbour_nodes is None else self.neighbour_nodes

    @staticmethod
    def bytes_per_node(*, edges_per_node: int, visits: int) -> int:
        return 12 * edges_per_node * visits + 8

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.buffers())

    def add(self, nodes: Tensor, neighbours: Tensor, sims: Tensor) -> None:
        """One visit of each of ``nodes`` with its ``[B, E]`` neighbours (``-1``: none).

        A node listed several times counts as several consecutive visits in list order, exactly as if the
        rows were added one call at a time.
        """
        nodes = nodes.to(self.device, torch.long)
        batch = nodes.shape[0]
        expected = (batch, self.edges_per_node)
        if neighbours.shape != expected or sims.shape != expected:
            raise ValueError(f"KNNGraph.add: expected neighbours and sims {expected}, got "
                             f"{tuple(neighbours.shape)}, {tuple(sims.shape)}")
        if batch == 0:
            return
        neighbours = neighbours.to(self.device, torch.long)
        if int(nodes.min()) < 0 or int(nodes.max()) >= self.num_nodes:
            raise IndexError(f"KNNGraph.add: node ids must be in [0, {self.num_nodes}), got "
                             f"[{int(nodes.min())}, {int(nodes.max())}]")
        if int(neighbours.max()) >= self.num_neighbour_nodes or int(neighbours.min()) < -1:
            raise IndexError(f"KNNGraph.add: neighbour ids must be -1 or in [0, {self.num_neighbour_nodes})")

        # Occurrence number of each row among the rows of the same node, in list order.
        unique, inverse, counts = torch.unique(nodes, return_inverse=True, return_counts=True)
        order = inverse.sort(stable=True).indices
        group_start = (counts.cumsum(dim=0) - counts)[inverse]
        occurrence = torch.empty_like(order)
        occurrence[order] = torch.arange(batch, device=self.device)
        occurrence -= group_start
        count = counts[inverse]

        # Rows overwritten later in the same call (more than V visits of one node) are dropped, so every
        # remaining (node, slot) pair is unique and the write is deterministic.
        keep = occurrence >= count - self.num_visits
        slot = (self.visits[nodes] + occurrence) % self.num_visits
        self.slots[nodes[keep], slot[keep]] = neighbours[keep]
        self.slot_sim[nodes[keep], slot[keep]] = sims.to(self.device, self.slot_sim.dtype)[keep]
        self.visits[unique] += counts

    def edges(self, *, weight: EdgeWeight = "multiplicity") -> tuple[Tensor, Tensor, Tensor]:
        """``(neighbour [M], node [M], weight [M])``: distinct pairs over the FIFO, sorted by node then neighbour.

        ``multiplicity``: number of slots holding the pair; ``similarity``: mean similarity over those slots.
        """
        check_option(EdgeWeight, weight, name="KNNGraph.edges: weight")
        flat = self.slots.reshape(self.num_nodes, -1)
        node = torch.arange(self.num_nodes, device=self.device).unsqueeze(1).expand_as(flat)
        valid = flat >= 0
        if self.neighbour_nodes is None:
            valid &= flat != node
        neighbour, node = flat[valid], node[valid]
        sims = self.slot_sim.reshape(self.num_nodes, -1)[valid]
        key = node * self.num_neighbour_nodes + neighbour
        unique, inverse, counts = torch.unique(key, return_inverse=True, return_counts=True)
        if weight == "multiplicity":
            values = counts.float()
        else:
            total = torch.zeros(unique.shape[0], dtype=torch.float64, device=self.device)
            values = (total.index_add_(0, inverse, sims.double()) / counts).float()
        return unique % self.num_neighbour_nodes, unique // self.num_neighbour_nodes, values
