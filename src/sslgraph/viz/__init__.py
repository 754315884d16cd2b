"""Pictures: training curves, the augmented views, embeddings before/after refinement, two-hop neighbourhoods
drawn with images, in-degree histograms of the graphs.

Each function takes records, tensors or a ``Data`` graph and the path of the PNG to write (atomically); the
run layer (:mod:`sslgraph.run.visualize`) decides which figures a run gets.
"""

from sslgraph.viz.curves import plot_training_curves
from sslgraph.viz.degrees import plot_degree_histograms
from sslgraph.viz.embedding import plot_embeddings_before_after, umap_available
from sslgraph.viz.neighbourhood import plot_two_hop
from sslgraph.viz.views import plot_views

__all__ = ["plot_degree_histograms", "plot_embeddings_before_after", "plot_training_curves", "plot_two_hop",
           "plot_views", "umap_available"]
