"""Typed configuration for every stage, presets, command-line overrides and validation.

One dataclass tree describes a whole run (pretraining, graph export, refinement, evaluation, pictures), so a
run directory's saved configuration is enough to reproduce it. Presets are YAML files shipped in
``sslgraph/presets``; a user file and ``key=value`` overrides are merged on top, then :func:`validate`
checks every value and names the key when one is wrong.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field, fields, is_dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Literal, Optional, get_args, get_origin, get_type_hints

import yaml
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sslgraph.choices import (RESNET18_FAMILY, Activation, BackboneName, BankBackend, Batching, BootstrapCandidates,
                              BudgetScope, CacheMode, Dataset, EdgeVariant, EdgeWeight, EncoderKind, ExportEdges,
                              ExportFeatures, JKMode, MethodName, NormKind, ObjectiveName, OptimizerName, Precision,
                              PropagationNorm, RefineMode, RefineOutput, SearchPrecision, StudentSearch)
from sslgraph.errors import ConfigError

DATA_ENV_VAR = "SSLGRAPH_DATA"
# Where CIFAR-10 is looked for, and downloaded to, when neither data.root nor $SSLGRAPH_DATA is set.
DEFAULT_DATA_ROOT = "data"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"


@dataclass
class DataConfig:
    # "cifar10": a CIFAR-10 root in the torchvision layout (cifar-10-batches-py) or an image-folder tree;
    # "imagefolder": ROOT/<train_split>/<class>/* and ROOT/<test_split>/<class>/*.
    dataset: Dataset = "cifar10"
    # Data root; when unset, $SSLGRAPH_DATA (for cifar10, also $SSLGRAPH_DATA/cifar10) is used, and for cifar10
    # without either, ./data (where CIFAR-10 is downloaded when missing).
    root: Optional[str] = None
    train_split: str = "train"
    # Held-out split; "auto" picks "test" or else "val", whichever exists.
    test_split: str = "auto"
    # Optional text file with one class folder name per line (e.g. the ImageNet-100 class list).
    class_list: Optional[str] = None
    # Keep only this many training / held-out images, class-balanced and deterministic (None: all).
    train_subset: Optional[int] = None
    test_subset: Optional[int] = None
    # Side of the square network input; 32 trains CIFAR at native resolution.
    image_size: int = 32
    # Decode small data sets once into a uint8 tensor cache ("auto": when the split has <= cache_max_images).
    cache: CacheMode = "auto"
    cache_max_images: int = 200_000
    # Where decoded caches are stored (None: <root>/.sslgraph_cache, falling back to ~/.cache/sslgraph).
    cache_dir: Optional[str] = None
    # Skip unreadable images and empty class folders (counted and logged) instead of stopping with an error.
    skip_corrupt: bool = False
    # Download CIFAR-10 with torchvision when it is absent from an explicitly given data.root (the default folder,
    # ./data or $SSLGRAPH_DATA, is downloaded into whenever CIFAR-10 is missing).
    download: bool = False
    # The CIFAR-10 python archive and its MD5 (a mirror may be given; null md5 skips the check).
    download_url: str = CIFAR10_URL
    download_md5: Optional[str] = CIFAR10_MD5
    num_workers: int = 2
    mean: list[float] = field(default_factory=lambda: [0.4914, 0.4822, 0.4465])
    std: list[float] = field(default_factory=lambda: [0.2470, 0.2435, 0.2616])


@dataclass
class AugConfig:
    crop_scale_min: float = 0.4
    crop_scale_max: float = 1.0
    flip_p: float = 0.5
    jitter_brightness: float = 0.4
    jitter_contrast: float = 0.4
    jitter_saturation: float = 0.2
    jitter_hue: float = 0.1
    jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_p1: float = 1.0
    blur_p2: float = 0.1
    solarize_p2: float = 0.2
    # Blur kernel as a fraction of the image side (odd size, at least 3 px).
    blur_kernel_frac: float = 0.1
    # Largest blur sigma in pixels; None: 2.0 * image_size / 224, i.e. the reference's blur (sigma 0.1-2.0 on
    # 224 px images) relative to the image, so 32 px images are not blurred seven times harder.
    blur_sigma_max: Optional[float] = None
    # Multi-crop: this many extra small crops per image, seen by the student only (the teacher, the banks and the
    # graphs see the two global views). Each local crop covers a share of the image drawn from
    # [local_crop_scale_min, local_crop_scale_max] and is resized to local_crop_size pixels (None: 3/7 of
    # data.image_size, DINO's 96 of 224); blurred with probability local_blur_p, never solarised.
    local_crops: int = 0
    local_crop_size: Optional[int] = None
    local_crop_scale_min: float = 0.05
    local_crop_scale_max: float = 0.4
    local_blur_p: float = 0.5
    # Make the views through torch.compile (sslgraph.data.batch_aug): the same views within 4e-6; a run of views of one
    # recipe with no blur or solarisation is one graph (draw, crop, colour, normalisation), otherwise the draw and the
    # colour steps are compiled. Both views of 256 images at 32 px: 10.6-12.2 instead of 20-21.5 ms on 2 CPU cores. The
    # first batch of each shape pays the compilation (about 21 s there, a few seconds from the compiler's disk cache);
    # on a CPU it needs a C++ compiler, and without one the views are made eagerly (one log line says so). On in the
    # CPU preset; off elsewhere until measured on a GPU.
    compile: bool = False


@dataclass
class ModelConfig:
    # Registry name (sslgraph.choices.BackboneName): vit_mini, vit_tiny, vit_small, vit_base, resnet_mini, ...
    backbone: BackboneName = "vit_tiny"
    patch_size: int = 16
    drop_path_rate: float = 0.1
    # ResNet only: 3x3 stride-1 first convolution and no max-pool, for 32 px images.
    cifar_stem: bool = True
    # ResNet-18 family only (resnet18, resnet_mini): channels of the first stage, doubled by each later one
    # (null: the architecture's own, 64 for resnet18, 16 for resnet_mini).
    width: Optional[int] = None
    # The width instead where training runs on a CPU (cpu_width) and where its steps there run in float32
    # (cpu_float32_width; optim.precision resolves to full precision: no native bf16), which takes precedence.
    # Settled once when pretraining starts and saved as model.width, so the run's later stages and a resume
    # rebuild the same network on any host (null: model.width). Other backbones than the ResNet-18 family leave
    # both aside, so a preset that sets them still takes any backbone.
    cpu_width: Optional[int] = None
    cpu_float32_width: Optional[int] = None
    out_dim: int = 10_000
    head_hidden_dim: int = 2048
    head_bottleneck_dim: int = 256
    norm_last_layer: bool = True
    # method.objective=simclr: BatchNorm in the projection head (SimCLR's). On GPUs under DDP it is synchronised
    # across processes; CPU processes (gloo) normalise their own share of the batch.
    head_batch_norm: bool = True


@dataclass
class OptimConfig:
    epochs: int = 100
    # Global batch size (summed over processes).
    batch_size: int = 256
    # Base learning rate for a global batch of 256; scaled linearly.
    lr: float = 5e-4
    min_lr: float = 1e-6
    warmup_epochs: float = 10
    weight_decay: float = 0.04
    weight_decay_end: float = 0.4
    # Per-parameter gradient-norm clip (0 disables).
    clip_grad: float = 3.0
    freeze_last_layer: int = 1
    momentum_teacher: float = 0.996
    # The teacher's EMA momentum at the last step (cosine from momentum_teacher); DINO's 1 freezes the teacher as
    # the run ends, a value below 1 keeps it following the student to the end.
    momentum_teacher_end: float = 1.0
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    # "auto" (bf16 autocast where bf16 is native: GPUs, CPUs with AVX512-BF16/AMX; else fp32), "fp32", "bf16",
    # "fp16".
    precision: Precision = "auto"
    compile: bool = False
    # "adamw" (DINO's) or "sgd" (Nesterov momentum; what a contrastive objective trains fastest with).
    optimizer: OptimizerName = "adamw"
    sgd_momentum: float = 0.9
    # NT-Xent temperature of method.objective=simclr.
    contrastive_temperature: float = 0.2
    # Decoupled contrastive loss: the positive left out of NT-Xent's denominator (losses.contrastive).
    contrastive_decoupled: bool = False
    # Train for this many minutes of training steps instead of optim.epochs: the first steps are timed, the
    # schedules are laid over the number of steps that fit, and each epoch end re-plans the rest from that
    # epoch's pace (the plan is stored in the checkpoint, so a resume rebuilds the same schedules).
    budget_minutes: Optional[float] = None
    # What the budget counts. "steps": the training steps' own seconds. "stage": the whole pretraining call, from
    # the trainer's set-up to its last file: epoch ends, checkpoints and monitors as they happen, and a reserve for
    # the end of training (the method's last held-out visit and graph export, the final kNN monitor) estimated from
    # an embedding pass timed at calibration. A slow host then trains fewer steps instead of overrunning.
    budget_scope: BudgetScope = "steps"
    # Also checkpoint in the middle of an epoch once this many minutes passed since the last checkpoint, so a
    # kill without warning (kill -9, a lost node) costs at most that much work (null: only at epoch ends).
    checkpoint_every_minutes: Optional[float] = 20.0


@dataclass
class MethodConfig:
    # "dino": no banks; "adasim": teacher bank + neighbour bootstrapping; "graph": adasim + both kNN graphs.
    name: MethodName = "graph"
    # The per-step loss of the two streams: "dino" (the paper's) or "simclr" (contrastive; learns on a short clock).
    objective: ObjectiveName = "dino"
    topk: int = 10
    # V: epochs in the vote window, and visits kept per node in the graph FIFO.
    vote_window: int = 3
    # E: edges added per visit to the nearest non-self neighbours (needs topk >= E + 1).
    edges_per_node: int = 5
    sampling_temperature: float = 0.001
    # Candidates of the AdaSim partner draw: "topk" (the reference's: the best `topk` of the window vote) or
    # "window" (every distinct index of the last V top-k lists, up to topk * V).
    bootstrap_candidates: BootstrapCandidates = "topk"
    # "exact" (chunked matrix product) or "faiss".
    bank_backend: BankBackend = "exact"
    bank_chunk_size: int = 65_536
    # The bank search's product: "fp32", or "bf16" (2-3x faster where the hardware has it) whose top candidates
    # are re-scored exactly in float32; "auto": bf16 on CUDA and on CPUs with native bf16 products.
    bank_search_precision: SearchPrecision = "auto"
    # Search the banks in their leading principal directions only (this many; null, or a number at or above the
    # feature width: the full width),
    # re-scoring 4 * topk candidates exactly: the search's product shrinks with the width. At 128 of
    # ResNet-18's 512 dimensions 99.9-100 % of a trained network's lists equal the exact ones (README, "Benchmarks").
    # The rebuilt export edges (export_edges=rebuilt) are searched the same way.
    bank_search_dim: Optional[int] = None
    # How often a bank searched in its principal directions refits them, per pass of N rows written (and whenever
    # its filled rows have doubled). Each refit, a d x d second moment over at most 16,384 of the bank's rows, runs
    # at the bank's next search, so a bank that is only ranked (student_search=teacher) refits only where searched.
    bank_refits_per_pass: int = 1
    # The graph method's student lists: "own" searches the whole student bank as the teacher's is searched;
    # "teacher" ranks the teacher search's candidates (4 * topk of them with bank_search_dim, 2 * topk in bf16,
    # else the teacher's top-k) exactly in the student bank, one bank product per step instead of two. The
    # teacher follows the student, so its candidates hold the student's neighbours (README, "Benchmarks").
    student_search: StudentSearch = "own"
    # Fill the banks with one embedding pass before training so epoch 0 does not rank against zeros.
    init_bank_pass: bool = True
    # Also build the held-out graph every N epochs for monitoring (0: only where the export needs it: in the
    # last V epochs for FIFO edges or bank features, else in the last epoch, whose embedding the monitor shares).
    test_graph_every: int = 1
    # Exported node features: "bank" (epoch-accumulated, as the reference) or "clean" (re-extracted).
    export_features: ExportFeatures = "clean"
    # "rebuilt": a fresh kNN graph from the exported features (default); "fifo": the edges accumulated over
    # the last V visits during training, as the reference exports them.
    export_edges: ExportEdges = "rebuilt"
    # Edge weight in the export: "multiplicity" (visits in which the edge appeared) or "similarity".
    export_edge_weight: EdgeWeight = "multiplicity"


@dataclass
class MonitorConfig:
    # Online kNN of the teacher backbone on clean images every N epochs (0 disables); also at initialisation.
    knn_every: int = 1
    knn_at_init: bool = True
    knn_k: int = 20
    knn_temperature: float = 0.07
    # Embed at most this many training images for the monitor (None: all).
    knn_train_subset: Optional[int] = None
    eval_batch_size: int = 512
    # Steps between the loop's reads of on-device values (the non-finite-loss check, the progress bar's loss):
    # each read waits for the device, so a GPU step never does. log.jsonl keeps one record per epoch.
    log_every: int = 50


@dataclass
class RefineConfig:
    # gcn, sage, gat, gin, gcnii
    encoder: EncoderKind = "gcn"
    num_layers: int = 2
    hidden_dim: int = 768
    # last, max, cat, mean
    jk: JKMode = "max"
    dropout: float = 0.0
    residual: bool = False
    # none, batch, layer
    norm: NormKind = "none"
    # Activation between GNN layers; the reference uses none.
    activation: Activation = "none"
    projector_dim: int = 768
    predictor_dim: int = 768
    ema: float = 0.99
    epochs: int = 100
    lr: float = 1e-4
    weight_decay: float = 0.0
    # Probability of zeroing each feature column per view (0 disables).
    feature_mask: float = 0.0
    # transductive: held-out nodes take part in training; inductive: train nodes only.
    mode: RefineMode = "transductive"
    # Reproduce the reference's reversed edge direction (held-out nodes then receive no messages).
    faithful: bool = False
    use_edge_weight: bool = True
    # Edges read by the refinement, derived from the exported pair without labels: "exported", "mutual",
    # "union" or "intersection" of the teacher and student graphs (see sslgraph.graph.edges.edge_variant).
    edges: EdgeVariant = "exported"
    # "auto": full batch when the graph has at most full_batch_max_nodes nodes, else neighbour-sampled.
    batching: Batching = "auto"
    full_batch_max_nodes: int = 300_000
    batch_size: int = 4096
    num_neighbors: list[int] = field(default_factory=lambda: [10, 10])
    # Embeddings written: "concat" [E(v1); E(v2)], "teacher", "student", "mean".
    output: RefineOutput = "concat"
    seed: int = 0
    # Refinements run with seeds seed, seed + 1, ...: the first gives the run's refined features, all of them
    # the spread in metrics.json (extra seeds are kept in refined.pt in float16).
    seeds: int = 1
    # Self term: share of a node's own (initial) feature put back at every hop, in [0, 1). Propagation
    # (encoder=appnp, and the baseline beside every trained GNN) uses it as APPNP's teleport; the GNN encoders
    # mix it into every layer's output. None: propagation picks (alpha, hops) without labels
    # (refine.propagate.select_alpha, raw features included as alpha=1), the GNNs use their own default.
    alpha: Optional[float] = None
    # Propagation hops (None: chosen with alpha); candidates searched by the label-free rule.
    hops: Optional[int] = None
    alpha_candidates: list[float] = field(default_factory=lambda: [0.1, 0.2, 0.35, 0.5, 0.7])
    hops_candidates: list[int] = field(default_factory=lambda: [1, 2, 4])
    # Propagation matrix: symmetric degree normalisation ("sym") or the mean over in-neighbours ("row"); with
    # symmetrise, a training edge j -> i also carries i -> j.
    propagation_norm: PropagationNorm = "sym"
    symmetrise: bool = True
    # Optimiser steps per epoch in full-batch mode (mini-batches take one step per batch).
    steps_per_epoch: int = 1
    # Weight of the variance + covariance (VICReg) term on the online embeddings that keeps them from
    # collapsing; 0 disables it.
    variance_weight: float = 0.0
    # Weight of a squared hinge on the online embeddings' mean pairwise cosine above the input features' own:
    # VICReg's terms leave the embeddings free to share one large mean direction (mean cosine 0.81 against
    # 0.39 for the input on the CPU run's graphs; 0.40 with this term at 10), which this penalises; 0 disables it.
    spread_weight: float = 10.0
    # A warning is logged when the embeddings' mean pairwise cosine rises above this (collapse).
    collapse_cosine: float = 0.8


@dataclass
class EvalConfig:
    knn_ks: list[int] = field(default_factory=lambda: [10, 20, 200])
    knn_temperature: float = 0.07
    # Logistic-regression probe on node embeddings: standardised features (training nodes' mean and std),
    # Xavier weights, full-batch Adam until the loss stops improving (relative change < probe_tol over
    # probe_patience steps) or probe_steps at most.
    probe_lr: float = 0.01
    probe_steps: int = 2000
    probe_seeds: int = 20
    probe_tol: float = 1.0e-4
    probe_patience: int = 20
    # Also run the authors' protocol (features as given, 100 Adam steps) and report it under its own name.
    reference_probe: bool = False
    # Evaluate the parameter-free propagation (refine.alpha / refine.hops, label-free when null) beside the
    # raw and trained features.
    propagation_baseline: bool = True
    # Linear probe on frozen backbone features (DINO protocol, SGD).
    backbone_probe: bool = True
    backbone_probe_epochs: int = 100
    backbone_probe_lr: float = 0.001
    backbone_probe_batch_size: int = 256
    # ViT: concatenate the CLS tokens of the last N blocks.
    backbone_probe_blocks: int = 4
    # Pretraining keeps the final networks' clean features (features.pt: 4 bytes x width x images per stream,
    # 245 MB for CIFAR-10 and a ResNet-18) so evaluation does not embed the data set again; false to save the disk.
    reuse_features: bool = True


@dataclass
class VizConfig:
    # Test nodes sampled for the before/after embedding plots.
    embed_samples: int = 2000
    umap: bool = True
    # Nodes whose 2-hop neighbourhoods are drawn (random when empty).
    centres: list[int] = field(default_factory=list)
    num_centres: int = 2
    hop1_max: int = 5
    hop2_max: int = 3


@dataclass
class AblateConfig:
    # `sslgraph ablate`: minutes of training steps per pretraining (dino, adasim, graph), the same for every
    # row (None: the preset's optim.budget_minutes, or optim.epochs when that is unset too).
    budget_minutes: Optional[float] = None


@dataclass
class PipelineConfig:
    # `sslgraph run`: the whole command's wall-clock limit in minutes (null: none), counted from its start or
    # from `--started-at` (the Makefile passes the moment `make run` began, so installation counts too). The
    # pretraining stage then ends by the limit less `later_stages_minutes`, or at its own budget
    # (optim.budget_minutes with optim.budget_scope=stage) if that comes first; a slow host trains fewer steps.
    time_limit_minutes: Optional[float] = None
    # Minutes kept for the stages after pretraining (refinement, evaluation, pictures, report); they are not
    # shortened themselves, so this is an estimate for the host, not a limit.
    later_stages_minutes: float = 3.0


@dataclass
class Config:
    seed: int = 0
    # Device: "auto" (cuda when available), "cpu", "cuda".
    device: str = "auto"
    out_dir: str = "runs/default"
    data: DataConfig = field(default_factory=DataConfig)
    aug: AugConfig = field(default_factory=AugConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    viz: VizConfig = field(default_factory=VizConfig)
    ablate: AblateConfig = field(default_factory=AblateConfig)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)


PRESETS = ("cifar10-cpu", "cifar10", "imagenet100", "imagenet1k")


def preset_path(name: str) -> Path:
    if name not in PRESETS:
        raise ConfigError(f"preset: unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return Path(str(resources.files("sslgraph") / "presets" / f"{name}.yaml"))


def load_config(
    *,
    base: dict[str, Any] | None = None,
    preset: str | None = None,
    config_file: str | os.PathLike | None = None,
    overrides: list[str] | tuple[str, ...] = (),
    data_root: str | None = None,
    out_dir: str | None = None,
) -> Config:
    """Merge defaults < ``base`` (a run's saved values) < preset < config file < ``key=value`` overrides <
    explicit options, then validate. Every malformed or invalid input raises :class:`ConfigError` naming the key."""
    merged = OmegaConf.structured(Config)
    try:
        if base is not None:
            merged = OmegaConf.merge(merged, OmegaConf.create(base))
        if preset is not None:
            merged = OmegaConf.merge(merged, _load_yaml(preset_path(preset), what=f"preset {preset}"))
        if config_file is not None:
            if not Path(config_file).is_file():
                raise ConfigError(f"--config: file not found: {config_file}")
            merged = OmegaConf.merge(merged, _load_yaml(Path(config_file), what="--config"))
        for item in overrides:
            merged = OmegaConf.merge(merged, parse_override(item))
        if data_root is not None:
            merged.data.root = data_root
        if out_dir is not None:
            merged.out_dir = out_dir
        cfg: Config = OmegaConf.to_object(merged)  # type: ignore[assignment]
    except OmegaConfBaseException as err:
        raise ConfigError(_describe_omegaconf_error(err)) from None
    validate(cfg)
    return cfg


def with_host_width(cfg: Config, *, cpu: bool, cpu_float32: bool) -> Config:
    """``cfg`` with ``model.cpu_width`` and ``model.cpu_float32_width`` settled: the first becomes ``model.width``
    where training runs on a CPU (``cpu``), the second where its steps there run in float32 (``cpu_float32``);
    both are dropped either way, so a saved config rebuilds the same network on any host."""
    m = cfg.model
    if m.cpu_width is None and m.cpu_float32_width is None:
        return cfg
    width = m.width
    if cpu and m.backbone in RESNET18_FAMILY:
        width = next((w for w in (m.cpu_float32_width if cpu_float32 else None, m.cpu_width) if w is not None), width)
    return dataclasses.replace(cfg, model=dataclasses.replace(m, width=width, cpu_width=None, cpu_float32_width=None))


def config_from_dict(values: dict[str, Any]) -> Config:
    """Rebuild a validated :class:`Config` from a plain dict (a checkpoint's or a run's saved values)."""
    return load_config(base=values)


def parse_override(item: str) -> Any:
    """One ``key=value`` override as a config fragment; the value is read as YAML (``[1,2]``, ``null``, ``1e-3``)."""
    key, sep, value = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"override {item!r} is not of the form key=value (e.g. optim.epochs=10)")
    try:
        return OmegaConf.from_dotlist([item])
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{key}: cannot read the value {value!r} of override {item!r} ({problem})") from None


def _load_yaml(path: Path, *, what: str) -> Any:
    try:
        return OmegaConf.load(path)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{what}: cannot read {path} as YAML ({problem})") from None


def to_dict(cfg: Config) -> dict[str, Any]:
    return OmegaConf.to_container(OmegaConf.structured(cfg))  # type: ignore[return-value]


def to_yaml(cfg: Config) -> str:
    return OmegaConf.to_yaml(OmegaConf.structured(cfg))


def _describe_omegaconf_error(err: OmegaConfBaseException) -> str:
    key = getattr(err, "full_key", None)
    msg = str(err).splitlines()[0]
    if key:
        return f"{key}: {msg}"
    return msg


def data_root_given(cfg: DataConfig) -> bool:
    """Whether the user named the data root (``data.root``/``--data-root``), rather than it being the default."""
    return bool(cfg.root)


def resolve_data_root(cfg: DataConfig, *, must_exist: bool = True) -> Path:
    """The data root from the config or $SSLGRAPH_DATA, for CIFAR-10 else ./data; a CIFAR-10 root may be the
    parent holding cifar10/."""
    root = cfg.root or os.environ.get(DATA_ENV_VAR)
    if not root:
        if cfg.dataset != "cifar10":
            raise ConfigError(f"data.root: no data root given; pass --data-root PATH or set ${DATA_ENV_VAR}")
        root = DEFAULT_DATA_ROOT
    path = Path(root).expanduser()
    if cfg.dataset == "cifar10" and not _looks_like_cifar_root(path) and _looks_like_cifar_root(path / "cifar10"):
        path = path / "cifar10"
    if must_exist and not path.exists():
        raise ConfigError(f"data.root: directory does not exist: {path}")
    return path


def _looks_like_cifar_root(path: Path) -> bool:
    return (path / "train").is_dir() or (path / "cifar-10-batches-py").is_dir()


def _check(ok: bool, key: str, message: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: {message}")


def _check_choices(node: Any, prefix: str = "") -> None:
    """Every ``Literal``-typed field holds one of its values (OmegaConf checks merged values; this also covers a
    :class:`Config` built or edited in code)."""
    hints = get_type_hints(type(node))
    for item in fields(node):
        value, key = getattr(node, item.name), f"{prefix}{item.name}"
        if is_dataclass(value):
            _check_choices(value, f"{key}.")
        elif get_origin(hints[item.name]) is Literal:
            allowed = get_args(hints[item.name])
            _check(value in allowed, key, f"must be one of {', '.join(allowed)}, got {value!r}")


def local_crop_size(aug: AugConfig, *, image_size: int) -> int:
    """Side of the local (multi-crop) views: ``aug.local_crop_size``, or 3/7 of the image (DINO's 96 of 224)."""
    return aug.local_crop_size if aug.local_crop_size is not None else max(4, round(image_size * 3 / 7))


def validate(cfg: Config) -> None:
    """Reject impossible or inconsistent values at start-up, naming the offending key. Constraints that only one
    pretraining method has are checked by that method (:func:`sslgraph.methods.check_method_config`)."""
    _check_choices(cfg)
    d, m, o, me, mo, r, e, v = cfg.data, cfg.model, cfg.optim, cfg.method, cfg.monitor, cfg.refine, cfg.eval, cfg.viz
    _check(cfg.device in ("auto", "cpu", "cuda") or cfg.device.startswith("cuda:"), "device",
           f"must be auto, cpu or cuda[:N], got {cfg.device!r}")
    _check(d.image_size >= 8, "data.image_size", f"must be >= 8, got {d.image_size}")
    _check(d.num_workers >= 0, "data.num_workers", f"must be >= 0, got {d.num_workers}")
    _check(bool(d.download_url), "data.download_url", "must not be empty")
    for key, val in (("data.train_subset", d.train_subset), ("data.test_subset", d.test_subset)):
        _check(val is None or val > 0, key, f"must be positive or null, got {val}")
    _check(len(d.mean) == 3 and len(d.std) == 3 and all(s > 0 for s in d.std), "data.mean/data.std",
           "need three values each, std positive")

    a = cfg.aug
    _check(0 < a.crop_scale_min <= a.crop_scale_max <= 1, "aug.crop_scale_min",
           f"need 0 < crop_scale_min <= crop_scale_max <= 1, got {a.crop_scale_min}, {a.crop_scale_max}")
    _check(a.blur_sigma_max is None or a.blur_sigma_max > 0, "aug.blur_sigma_max",
           f"must be positive or null, got {a.blur_sigma_max}")
    for name in ("flip_p", "jitter_p", "grayscale_p", "blur_p1", "blur_p2", "solarize_p2", "local_blur_p"):
        val = getattr(a, name)
        _check(0.0 <= val <= 1.0, f"aug.{name}", f"probability must be in [0, 1], got {val}")
    _check(a.local_crops >= 0, "aug.local_crops", f"must be >= 0, got {a.local_crops}")
    _check(0 < a.local_crop_scale_min <= a.local_crop_scale_max <= 1, "aug.local_crop_scale_min",
           f"need 0 < local_crop_scale_min <= local_crop_scale_max <= 1, got {a.local_crop_scale_min}, "
           f"{a.local_crop_scale_max}")
    local_size = local_crop_size(a, image_size=d.image_size)
    _check(4 <= local_size <= d.image_size, "aug.local_crop_size",
           f"must be in [4, data.image_size = {d.image_size}] or null, got {a.local_crop_size}")

    if m.backbone.startswith("vit"):
        _check(m.patch_size > 0 and d.image_size % m.patch_size == 0, "model.patch_size",
               f"image size {d.image_size} must be a multiple of the patch size {m.patch_size}")
        _check(a.local_crops == 0 or local_size % m.patch_size == 0, "aug.local_crop_size",
               f"local crop size {local_size} must be a multiple of the patch size {m.patch_size}")
    _check(m.out_dim >= 2, "model.out_dim", f"must be >= 2, got {m.out_dim}")
    for name in ("width", "cpu_width", "cpu_float32_width"):
        value = getattr(m, name)
        _check(value is None or value >= 1, f"model.{name}", f"must be >= 1 or null, got {value}")
    _check(m.width is None or m.backbone in RESNET18_FAMILY, "model.width",
           f"applies to the ResNet-18 family only ({', '.join(RESNET18_FAMILY)}), not {m.backbone}")
    _check(0.0 <= m.drop_path_rate < 1.0, "model.drop_path_rate", f"must be in [0, 1), got {m.drop_path_rate}")

    _check(o.epochs >= 1, "optim.epochs", f"must be >= 1, got {o.epochs}")
    _check(o.batch_size >= 2, "optim.batch_size", f"must be >= 2, got {o.batch_size}")
    _check(o.lr > 0 and math.isfinite(o.lr), "optim.lr", f"must be a positive number, got {o.lr}")
    _check(0 <= o.min_lr <= o.lr, "optim.min_lr", f"must be in [0, optim.lr={o.lr}], got {o.min_lr}")
    _check(0 <= o.warmup_epochs <= o.epochs, "optim.warmup_epochs",
           f"must be in [0, optim.epochs={o.epochs}], got {o.warmup_epochs}")
    _check(o.weight_decay >= 0 and o.weight_decay_end >= 0, "optim.weight_decay", "must be >= 0")
    _check(o.clip_grad >= 0, "optim.clip_grad", f"must be >= 0, got {o.clip_grad}")
    _check(o.budget_minutes is None or (o.budget_minutes > 0 and math.isfinite(o.budget_minutes)),
           "optim.budget_minutes", f"must be a positive number or null, got {o.budget_minutes}")
    _check(o.budget_scope == "steps" or o.budget_minutes is not None, "optim.budget_scope",
           f"{o.budget_scope} needs optim.budget_minutes (the budget it scopes)")
    _check(o.checkpoint_every_minutes is None or o.checkpoint_every_minutes > 0, "optim.checkpoint_every_minutes",
           f"must be positive or null, got {o.checkpoint_every_minutes}")
    _check(0 <= o.momentum_teacher < 1, "optim.momentum_teacher", f"must be in [0, 1), got {o.momentum_teacher}")
    _check(o.momentum_teacher <= o.momentum_teacher_end <= 1, "optim.momentum_teacher_end",
           f"must be in [optim.momentum_teacher = {o.momentum_teacher}, 1], got {o.momentum_teacher_end}")
    for name in ("teacher_temp", "warmup_teacher_temp", "student_temp"):
        _check(getattr(o, name) > 0, f"optim.{name}", f"must be > 0, got {getattr(o, name)}")
    _check(0 <= o.center_momentum < 1, "optim.center_momentum", f"must be in [0, 1), got {o.center_momentum}")

    _check(me.topk >= 1, "method.topk", f"must be >= 1, got {me.topk}")
    _check(me.vote_window >= 1, "method.vote_window", f"must be >= 1, got {me.vote_window}")
    _check(me.edges_per_node >= 1, "method.edges_per_node", f"must be >= 1, got {me.edges_per_node}")
    _check(me.sampling_temperature > 0, "method.sampling_temperature",
           f"must be > 0, got {me.sampling_temperature}")
    _check(me.bank_chunk_size >= 1, "method.bank_chunk_size", f"must be >= 1, got {me.bank_chunk_size}")
    _check(me.bank_search_dim is None or me.bank_search_dim >= 1, "method.bank_search_dim",
           f"must be >= 1 or null, got {me.bank_search_dim}")
    _check(me.bank_search_dim is None or me.bank_backend == "exact", "method.bank_search_dim",
           f"needs method.bank_backend=exact, got {me.bank_backend}")
    _check(me.bank_refits_per_pass >= 1, "method.bank_refits_per_pass",
           f"must be >= 1, got {me.bank_refits_per_pass}")
    _check(me.test_graph_every >= 0, "method.test_graph_every", f"must be >= 0, got {me.test_graph_every}")

    _check(mo.knn_every >= 0, "monitor.knn_every", f"must be >= 0, got {mo.knn_every}")
    _check(mo.knn_k >= 1, "monitor.knn_k", f"must be >= 1, got {mo.knn_k}")
    _check(mo.knn_temperature > 0, "monitor.knn_temperature", f"must be > 0, got {mo.knn_temperature}")
    _check(mo.log_every >= 1, "monitor.log_every", f"must be >= 1, got {mo.log_every}")
    _check(cfg.ablate.budget_minutes is None or cfg.ablate.budget_minutes > 0, "ablate.budget_minutes",
           f"must be positive or null, got {cfg.ablate.budget_minutes}")
    pl = cfg.pipeline
    _check(pl.time_limit_minutes is None or (pl.time_limit_minutes > 0 and math.isfinite(pl.time_limit_minutes)),
           "pipeline.time_limit_minutes", f"must be a positive number or null, got {pl.time_limit_minutes}")
    _check(pl.later_stages_minutes >= 0 and math.isfinite(pl.later_stages_minutes), "pipeline.later_stages_minutes",
           f"must be a number >= 0, got {pl.later_stages_minutes}")
    _check(pl.time_limit_minutes is None or (o.budget_minutes is not None and o.budget_scope == "stage"),
           "pipeline.time_limit_minutes", "needs a pretraining stage budget (optim.budget_minutes with "
           "optim.budget_scope=stage), which the limit can shorten")

    _check(r.num_layers >= 1, "refine.num_layers", f"must be >= 1, got {r.num_layers}")
    _check(r.hidden_dim >= 1, "refine.hidden_dim", f"must be >= 1, got {r.hidden_dim}")
    _check(0 <= r.dropout < 1, "refine.dropout", f"must be in [0, 1), got {r.dropout}")
    _check(0 <= r.feature_mask < 1, "refine.feature_mask", f"must be in [0, 1), got {r.feature_mask}")
    _check(0 <= r.ema < 1, "refine.ema", f"must be in [0, 1), got {r.ema}")
    _check(r.epochs >= 1, "refine.epochs", f"must be >= 1, got {r.epochs}")
    _check(r.seeds >= 1, "refine.seeds", f"must be >= 1, got {r.seeds}")
    _check(r.lr > 0, "refine.lr", f"must be > 0, got {r.lr}")
    _check(r.alpha is None or 0 <= r.alpha <= 1, "refine.alpha", f"must be in [0, 1] or null, got {r.alpha}")
    _check(r.hops is None or r.hops >= 0, "refine.hops", f"must be >= 0 or null, got {r.hops}")
    _check(bool(r.alpha_candidates) and all(0 <= a < 1 for a in r.alpha_candidates), "refine.alpha_candidates",
           f"must be a non-empty list of values in [0, 1), got {list(r.alpha_candidates)}")
    _check(bool(r.hops_candidates) and all(h >= 1 for h in r.hops_candidates), "refine.hops_candidates",
           f"must be a non-empty list of values >= 1, got {list(r.hops_candidates)}")
    _check(r.steps_per_epoch >= 1, "refine.steps_per_epoch", f"must be >= 1, got {r.steps_per_epoch}")
    _check(r.variance_weight >= 0, "refine.variance_weight", f"must be >= 0, got {r.variance_weight}")
    _check(r.spread_weight >= 0, "refine.spread_weight", f"must be >= 0, got {r.spread_weight}")
    _check(len(r.num_neighbors) == r.num_layers, "refine.num_neighbors",
           f"needs one fan-out per layer ({r.num_layers}), got {list(r.num_neighbors)}")

    _check(len(e.knn_ks) > 0 and all(k >= 1 for k in e.knn_ks), "eval.knn_ks",
           f"need positive k values, got {e.knn_ks}")
    _check(e.probe_seeds >= 1, "eval.probe_seeds", f"must be >= 1, got {e.probe_seeds}")
    _check(e.probe_steps >= 1, "eval.probe_steps", f"must be >= 1, got {e.probe_steps}")
    _check(v.embed_samples >= 10, "viz.embed_samples", f"must be >= 10, got {v.embed_samples}")
