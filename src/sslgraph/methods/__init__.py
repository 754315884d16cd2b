"""Pretraining methods and their registry: ``dino`` (no hooks), ``adasim`` (teacher bank + bootstrapping),
``graph`` (+ the teacher and student kNN graphs).

The registry is the only place that maps ``method.name`` to code; everything else asks a method class what it
can do (:attr:`~sslgraph.methods.hooks.Method.keeps_graphs`, :meth:`~sslgraph.methods.hooks.Method.check_config`).
"""

from __future__ import annotations

from typing import Any

from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.methods.adasim import AdaSim
from sslgraph.methods.dino import DINO
from sslgraph.methods.graph import GraphMethod
from sslgraph.methods.hooks import Method, Split, Stream, TrainContext

__all__ = ["METHODS", "Method", "Split", "Stream", "TrainContext", "build_method", "check_method_config",
           "method_class", "require_graphs"]

# Keys are the values of sslgraph.choices.MethodName (the config option); a test checks that the two match.
METHODS: dict[str, type[Method]] = {method.name: method for method in (DINO, AdaSim, GraphMethod)}


def method_class(name: str) -> type[Method]:
    """The :class:`Method` subclass registered as ``name``."""
    if name not in METHODS:
        raise ConfigError(f"method.name: unknown method {name!r}; choose one of {', '.join(METHODS)}")
    return METHODS[name]


def check_method_config(cfg: Config) -> None:
    """The constraints of the configured method (e.g. ``graph`` needs ``method.topk > method.edges_per_node``)."""
    method_class(cfg.method.name).check_config(cfg)


def require_graphs(cfg: Config, *, purpose: str) -> None:
    """Raise :class:`ConfigError` unless the configured method keeps the kNN graphs ``purpose`` needs."""
    if not method_class(cfg.method.name).keeps_graphs:
        keeping = ", ".join(name for name, method in METHODS.items() if method.keeps_graphs)
        raise ConfigError(f"method.name: {purpose} needs the kNN graphs, which method {cfg.method.name!r} does not "
                          f"keep; use method.name={keeping} (`sslgraph pretrain` trains any method alone)")


def build_method(cfg: Config, **kwargs: Any) -> Method:
    """The method named by ``cfg.method.name``, after its own config checks; ``kwargs`` go to its constructor."""
    check_method_config(cfg)
    return method_class(cfg.method.name)(cfg, **kwargs)
