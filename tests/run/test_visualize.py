"""The figures stage on a run directory: every figure whose inputs exist, centres checked, empty runs tolerated."""

from pathlib import Path

import pytest
import torch
from PIL import Image
from torch_geometric.data import Data

from sslgraph.config import Config, ConfigError
from sslgraph.graph.export import save_graph, save_refined
from sslgraph.run import RunDir
from sslgraph.run.visualize import visualize_run
from sslgraph.utils.io import append_jsonl

NUM_TRAIN, NUM_TEST = 8, 12
pytestmark = pytest.mark.usefixtures("one_openmp_thread")


def _image_folder(root: Path) -> None:
    gen = torch.Generator().manual_seed(0)
    for split, per_class in (("train", NUM_TRAIN // 2), ("test", NUM_TEST // 2)):
        for name in ("apple", "pear"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = torch.randint(0, 256, (32, 32, 3), generator=gen, dtype=torch.uint8)
                Image.fromarray(pixels.numpy()).save(folder / f"{i}.png")


def _run(tmp_path: Path) -> tuple[RunDir, Config]:
    _image_folder(tmp_path / "data")
    cfg = Config()
    cfg.data.dataset, cfg.data.root = "imagefolder", str(tmp_path / "data")
    cfg.viz.umap, cfg.viz.num_centres = False, 1
    run = RunDir(tmp_path / "run")
    n = NUM_TRAIN + NUM_TEST
    y = torch.cat([torch.arange(2).repeat_interleave(NUM_TRAIN // 2), torch.arange(2).repeat_interleave(NUM_TEST // 2)])
    node = torch.arange(n)
    # Every node aggregates from the two training nodes before it (mod NUM_TRAIN).
    targets = node.repeat_interleave(2)
    sources = (targets - torch.tensor([1, 2]).repeat(n)) % NUM_TRAIN
    keep = sources != targets
    gen = torch.Generator().manual_seed(1)
    graphs = {}
    for stream in ("teacher", "student"):
        graphs[stream] = Data(x=torch.randn(n, 5, generator=gen),
                              edge_index=torch.stack([sources[keep], targets[keep]]),
                              edge_weight=torch.ones(int(keep.sum())), y=y, train_mask=node < NUM_TRAIN,
                              test_mask=node >= NUM_TRAIN, num_train=NUM_TRAIN)
        save_graph(graphs[stream], run.graph(stream))
    save_refined(run.refined, embeddings=torch.randn(n, 6, generator=gen), reference=graphs["teacher"])
    append_jsonl(run.log, {"epoch": -1, "knn_top1": 50.0})
    append_jsonl(run.log, {"epoch": 0, "loss": 3.0, "knn_top1": 55.0})
    return run, cfg


def test_visualize_run_makes_every_figure(tmp_path):
    run, cfg = _run(tmp_path)
    made = visualize_run(run, cfg)
    names = sorted(p.name for p in made)
    assert names[:3] == ["augmented_views.png", "embedding_tsne.png", "training_curves.png"]
    two_hop = [n for n in names if n.startswith("two_hop_")]
    assert len(two_hop) == 2 and {n.split("_")[2] for n in two_hop} == {"teacher", "student"}
    centre = int(two_hop[0].split("_")[3].removesuffix(".png"))
    assert NUM_TRAIN <= centre < NUM_TRAIN + NUM_TEST  # random centres are held-out nodes
    for path in made:
        assert path.parent == run.figures_dir
        with Image.open(path) as img:
            assert max(img.size) < 4000


def test_visualize_run_rejects_unknown_centre_and_tolerates_empty_run(tmp_path):
    run, cfg = _run(tmp_path)
    cfg.viz.centres = [3, 99]
    with pytest.raises(ConfigError, match=r"viz.centres: \[99\]"):
        visualize_run(run, cfg)
    assert visualize_run(RunDir(tmp_path / "nothing"), cfg) == []
