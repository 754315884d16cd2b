"""Each enumerated option is listed once (sslgraph.choices); the code that dispatches on it covers it exactly."""

from __future__ import annotations

import pytest

from sslgraph.choices import (Activation, BackboneName, BankBackend, EdgeWeight, EncoderKind, JKMode, NormKind,
                              RefineOutput, check_option, options)
from sslgraph.graph.bank import BACKENDS
from sslgraph.models.backbones import BACKBONES
from sslgraph.refine.encoders import ACTIVATIONS, ENCODER_KINDS, JK_MODES, NORMS


def test_registries_and_dispatchers_use_the_declared_values() -> None:
    assert tuple(BACKBONES) == options(BackboneName)
    assert BACKENDS == options(BankBackend)
    assert (JK_MODES, NORMS, ACTIVATIONS) == tuple(options(choice) for choice in (JKMode, NormKind, Activation))
    assert set(ENCODER_KINDS) <= set(options(EncoderKind))  # the trained GNN kinds among the refine.encoder values


def test_check_option_names_the_option_and_the_choices() -> None:
    check_option(EdgeWeight, "similarity", name="weight")
    with pytest.raises(ValueError, match="refine.output must be one of concat, teacher, student, mean, got 'sum'"):
        check_option(RefineOutput, "sum", name="refine.output")
    with pytest.raises(TypeError):
        options(int)
