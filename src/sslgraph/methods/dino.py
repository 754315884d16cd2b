"""DINO: self-distillation between two views of the same image, no memory bank, no graph.

The base :class:`~sslgraph.methods.hooks.Method` already is DINO (its hooks do nothing); this class names it
so that ``method.name=dino`` reads like the other methods.
"""

from sslgraph.methods.hooks import Method


class DINO(Method):
    name = "dino"
