"""Every enumerated option, listed once as a ``Literal`` type.

The config annotates its fields with these types, so OmegaConf rejects any other value and names the key;
the code that dispatches on an option reads its allowed values from the same type (:func:`options`), and a
registry keyed by an option is tested to cover it exactly. Adding a value here is the one place a new
backbone, encoder or backend is declared.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

Dataset = Literal["cifar10", "imagefolder"]
CacheMode = Literal["auto", "always", "never"]
BackboneName = Literal["vit_mini", "vit_tiny", "vit_small", "vit_base", "resnet_mini", "resnet18", "resnet50"]
# The backbones whose channel count model.width sets.
RESNET18_FAMILY: tuple[BackboneName, ...] = ("resnet18", "resnet_mini")
Precision = Literal["auto", "fp32", "bf16", "fp16"]
MethodName = Literal["dino", "adasim", "graph"]
ObjectiveName = Literal["dino", "simclr"]
OptimizerName = Literal["adamw", "sgd"]
# What optim.budget_minutes counts: the training steps' own seconds, or the whole pretraining call.
BudgetScope = Literal["steps", "stage"]
BankBackend = Literal["exact", "faiss"]
BootstrapCandidates = Literal["topk", "window"]
# Precision of the bank search's matrix product: "auto" picks bf16 where the hardware multiplies it natively
# (CUDA, CPUs with AVX512-BF16 or AMX), candidates are then re-scored exactly in float32.
SearchPrecision = Literal["auto", "fp32", "bf16"]
# Where the student bank's lists come from: "own" (a search of the whole student bank, as the teacher's) or
# "teacher" (the student's top-k among the teacher search's candidates, ranked exactly in the student bank).
StudentSearch = Literal["own", "teacher"]
ExportFeatures = Literal["bank", "clean"]
EdgeWeight = Literal["multiplicity", "similarity"]
# Exported edges: "rebuilt" as a single-visit kNN graph from the exported features (purer: 35 % vs 25 % same-class
# on the CPU preset), or "fifo", the last V visits' edges accumulated during training (the reference).
ExportEdges = Literal["rebuilt", "fifo"]
# Edges the refinement reads, derived without labels from the exported pair (graph/edges.py): "exported" as
# written, "mutual" (a training edge only where each end is among the other's neighbours), "union" or
# "intersection" of the teacher and student graphs (both streams then share one edge set).
EdgeVariant = Literal["exported", "mutual", "union", "intersection"]
EncoderKind = Literal["gcn", "sage", "gat", "gin", "gcnii", "appnp"]
JKMode = Literal["last", "max", "cat", "mean"]
NormKind = Literal["none", "batch", "layer"]
Activation = Literal["none", "relu", "prelu", "gelu"]
RefineMode = Literal["transductive", "inductive"]
Batching = Literal["auto", "full", "minibatch"]
RefineOutput = Literal["concat", "teacher", "student", "mean"]
PropagationNorm = Literal["sym", "row"]


def options(choice: Any) -> tuple[str, ...]:
    """The allowed values of a ``Literal`` choice type, in declaration order."""
    values = get_args(choice)
    if not values or not all(isinstance(v, str) for v in values):
        raise TypeError(f"options: expected a Literal of strings, got {choice!r}")
    return values


def check_option(choice: Any, value: str, *, name: str) -> None:
    """Raise ``ValueError`` naming ``name`` when ``value`` is not one of ``choice``'s values (library entry points)."""
    allowed = options(choice)
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(allowed)}, got {value!r}")
