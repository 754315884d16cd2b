"""Stage B: self-supervised GNN refinement (graph BYOL) over the teacher and student kNN graphs."""

from sslgraph.refine.byol import GraphBYOL, GraphView, byol_loss
from sslgraph.refine.encoders import GNNEncoder
from sslgraph.refine.train import RefineError, RefineResult, refine_graphs, run_refine

__all__ = ["GNNEncoder", "GraphBYOL", "GraphView", "RefineError", "RefineResult", "byol_loss", "refine_graphs",
           "run_refine"]
