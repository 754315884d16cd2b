"""sslgraph: self-supervised representation learning beyond augmentation (kNN graphs between instances)."""

__version__ = "0.1.0"
