import pytest
import torch
from PIL import Image

from sslgraph.viz.embedding import plot_embeddings_before_after, project_2d, sample_indices, umap_available


def _clusters(n_per_class: int, num_classes: int, dim: int, seed: int):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(n_per_class)
    centres = torch.randn(num_classes, dim, generator=gen) * 3
    return centres[labels] + torch.randn(labels.shape[0], dim, generator=gen), labels


def test_tsne_before_after_figure_is_written(tmp_path):
    raw, labels = _clusters(20, 3, 8, seed=0)
    refined = raw + 0.1 * torch.randn_like(raw)
    path = plot_embeddings_before_after(raw, refined, labels, ["cat", "dog", "ship"], tmp_path / "fig" / "e.png",
                                        method="tsne", seed=0)
    assert path.is_file() and path.stat().st_size > 10_000
    with Image.open(path) as img:
        width, height = img.size
    assert 800 < width < 4000 and 400 < height < 4000


def test_sampling_is_seeded_sorted_and_bounded():
    a = sample_indices(100, 30, seed=1)
    assert torch.equal(a, sample_indices(100, 30, seed=1))
    assert a.numel() == 30 and torch.equal(a, a.sort().values) and a.unique().numel() == 30
    assert torch.equal(sample_indices(10, 30, seed=1), torch.arange(10))


def test_projection_rejects_unknown_method_and_checks_rows(tmp_path):
    with pytest.raises(ValueError, match="method"):
        project_2d(torch.randn(10, 3), method="pca", seed=0)
    with pytest.raises(ValueError, match="same number of rows"):
        plot_embeddings_before_after(torch.randn(10, 3), torch.randn(9, 3), torch.zeros(10, dtype=torch.long),
                                     ["a"], tmp_path / "x.png")


@pytest.mark.slow
@pytest.mark.skipif(not umap_available(), reason="umap-learn is not installed")
def test_umap_figure_is_written(tmp_path):
    raw, labels = _clusters(20, 3, 8, seed=2)
    path = plot_embeddings_before_after(raw, raw * 2, labels, ["a", "b", "c"], tmp_path / "u.png", method="umap")
    assert path.stat().st_size > 10_000
