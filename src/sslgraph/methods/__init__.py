"""Pretraining methods: ``dino`` (no hooks), ``adasim`` (teacher bank + bootstrapping), ``graph`` (+ kNN graphs)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sslgraph.config import Config, ConfigError

if TYPE_CHECKING:
    from sslgraph.methods.base import Method

METHOD_NAMES = ("dino", "adasim", "graph")


def build_method(cfg: Config, **kwargs: Any) -> Method:
    """The :class:`~sslgraph.methods.base.Method` named by ``cfg.method.name``; ``kwargs`` go to its constructor."""
    # Imported here: the method modules import the trainer module, which imports this registry.
    from sslgraph.methods.adasim import AdaSim
    from sslgraph.methods.dino import DINO
    from sslgraph.methods.graph import GraphMethod

    registry: dict[str, type[Method]] = {"dino": DINO, "adasim": AdaSim, "graph": GraphMethod}
    if cfg.method.name not in registry:
        raise ConfigError(f"method.name: unknown method {cfg.method.name!r}; choose one of {', '.join(METHOD_NAMES)}")
    return registry[cfg.method.name](cfg, **kwargs)
