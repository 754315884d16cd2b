"""Stage B: self-supervised GNN refinement (graph BYOL) over the teacher and student kNN graphs."""

from sslgraph.refine.byol import GraphBYOL, GraphView, byol_loss
from sslgraph.refine.encoders import GNNEncoder
from sslgraph.errors import RefineError
from sslgraph.refine.train import RefineResult, refine_graphs, validate_graphs

__all__ = ["GNNEncoder", "GraphBYOL", "GraphView", "RefineError", "RefineResult", "byol_loss", "refine_graphs",
           "validate_graphs"]
