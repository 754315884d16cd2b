"""The registry is the one map from ``method.name`` to code, and covers every allowed name."""

from __future__ import annotations

import pytest

from sslgraph.choices import MethodName, options
from sslgraph.config import Config
from sslgraph.errors import ConfigError
from sslgraph.methods import METHODS, check_method_config, method_class, require_graphs


def test_registry_covers_exactly_the_configurable_names() -> None:
    assert tuple(METHODS) == options(MethodName)
    assert all(method_class(name).name == name for name in METHODS)


def test_only_graph_keeps_graphs_and_the_pipeline_says_so() -> None:
    cfg = Config()
    for name in METHODS:
        cfg.method.name = name  # type: ignore[assignment]
        if METHODS[name].keeps_graphs:
            require_graphs(cfg, purpose="refinement")
        else:
            with pytest.raises(ConfigError, match=rf"method\.name: refinement needs the kNN graphs.*{name!r}"):
                require_graphs(cfg, purpose="refinement")
    assert [name for name, method in METHODS.items() if method.keeps_graphs] == ["graph"]


def test_unknown_name_and_method_constraints_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="method.name: unknown method 'simclr'"):
        method_class("simclr")
    cfg = Config()
    cfg.method.topk, cfg.method.edges_per_node = 5, 5
    with pytest.raises(ConfigError, match="method.topk"):
        check_method_config(cfg)
    cfg.method.name = "adasim"
    check_method_config(cfg)  # adasim adds no edges, so it has no such constraint
