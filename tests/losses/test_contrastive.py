"""NT-Xent against a loop over rows written from the formula, and the split-over-processes identity."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from sslgraph.losses.contrastive import multi_crop_nt_xent_loss, nt_xent_loss


def _by_hand(z1: torch.Tensor, z2: torch.Tensor, t: float, *, decoupled: bool = False) -> float:
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    n, total = len(z1), 0.0
    for i in range(2 * n):
        positive = (i + n) % (2 * n)
        left_out = {i, positive} if decoupled else {i}
        denominator = sum(math.exp(float(z[i] @ z[k]) / t) for k in range(2 * n) if k not in left_out)
        total += -float(z[i] @ z[positive]) / t + math.log(denominator)
    return total / (2 * n)


def test_two_pairs_by_hand() -> None:
    # Views e1, e2 | e2, -e1; every positive is orthogonal (cosine 0), so each row's loss is the log of its
    # denominator. Rows e1 and -e1 see cosines {0, 0, -1}, rows e2 see {0, 0, +1}; temperature 0.5.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = (math.log(2 + math.exp(-2.0)) + math.log(2 + math.exp(2.0))) / 2
    assert nt_xent_loss(z1, z2, temperature=0.5).item() == pytest.approx(expected, abs=1e-6)


def test_matches_the_formula_on_random_views() -> None:
    generator = torch.Generator().manual_seed(0)
    z1, z2 = torch.randn(6, 5, generator=generator), torch.randn(6, 5, generator=generator)
    assert nt_xent_loss(z1, z2, temperature=0.2).item() == pytest.approx(_by_hand(z1, z2, 0.2), rel=1e-5)


def test_two_pairs_by_hand_decoupled() -> None:
    # As above without the positive (cosine 0, exp(0) = 1) in each denominator.
    z1 = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    z2 = torch.tensor([[0.0, 1.0], [-1.0, 0.0]])
    expected = (math.log(1 + math.exp(-2.0)) + math.log(1 + math.exp(2.0))) / 2
    assert nt_xent_loss(z1, z2, temperature=0.5, decoupled=True).item() == pytest.approx(expected, abs=1e-6)


def test_decoupled_matches_the_formula_and_splits_over_processes() -> None:
    generator = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(8, 5, generator=generator), torch.randn(8, 5, generator=generator)
    whole = nt_xent_loss(z1, z2, temperature=0.2, decoupled=True)
    assert whole.item() == pytest.approx(_by_hand(z1, z2, 0.2, decoupled=True), rel=1e-5)
    assert whole.item() < nt_xent_loss(z1, z2, temperature=0.2).item()  # a smaller denominator in every row
    parts = [nt_xent_loss(z1[i:i + 4], z2[i:i + 4], temperature=0.2, keys=(z1, z2), offset=i, decoupled=True)
             for i in (0, 4)]
    assert (sum(parts) / 2).item() == pytest.approx(whole.item(), rel=1e-6)
    views = torch.stack([z1, z2, torch.randn(8, 5, generator=generator)])
    multi = multi_crop_nt_xent_loss(views, temperature=0.2, decoupled=True)
    pairs = [nt_xent_loss(views[a], views[b], temperature=0.2, decoupled=True) for a, b in ((0, 1), (0, 2), (1, 2))]
    assert multi.item() == pytest.approx(sum(p.item() for p in pairs) / 3, rel=1e-6)


def test_split_queries_with_global_keys_average_to_the_whole_batch() -> None:
    generator = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(8, 4, generator=generator), torch.randn(8, 4, generator=generator)
    whole = nt_xent_loss(z1, z2, temperature=0.3)
    parts = [nt_xent_loss(z1[i:i + 4], z2[i:i + 4], temperature=0.3, keys=(z1, z2), offset=i) for i in (0, 4)]
    assert (sum(parts) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def test_identical_views_far_from_the_rest_give_a_small_loss() -> None:
    z = torch.eye(4) * 10
    assert nt_xent_loss(z, z, temperature=0.1).item() < 1e-3


def test_bad_shapes_and_temperature() -> None:
    with pytest.raises(ValueError, match="must both be"):
        nt_xent_loss(torch.zeros(3, 2), torch.zeros(4, 2), temperature=0.1)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent_loss(torch.ones(3, 2), torch.ones(3, 2), temperature=0.0)


def test_multi_crop_with_two_views_is_the_plain_loss() -> None:
    generator = torch.Generator().manual_seed(2)
    z = torch.randn(2, 6, 5, generator=generator)
    assert multi_crop_nt_xent_loss(z, temperature=0.2).item() == pytest.approx(_by_hand(z[0], z[1], 0.2), rel=1e-5)


def test_multi_crop_averages_the_pairs_that_contain_a_global_view() -> None:
    generator = torch.Generator().manual_seed(3)
    z = torch.randn(4, 5, 3, generator=generator)  # two global views, two local crops
    pairs = [(0, 1), (0, 2), (0, 3), (1, 2), (1, 3)]  # never (2, 3): two local crops are not compared
    expected = sum(_by_hand(z[a], z[b], 0.3) for a, b in pairs) / len(pairs)
    assert multi_crop_nt_xent_loss(z, temperature=0.3).item() == pytest.approx(expected, rel=1e-5)


def test_multi_crop_split_over_processes_averages_to_the_whole_batch() -> None:
    generator = torch.Generator().manual_seed(4)
    z = torch.randn(3, 8, 4, generator=generator)
    whole = multi_crop_nt_xent_loss(z, temperature=0.3)
    parts = [multi_crop_nt_xent_loss(z[:, i:i + 4], temperature=0.3, keys=z, offset=i) for i in (0, 4)]
    assert (sum(parts) / 2).item() == pytest.approx(whole.item(), rel=1e-6)


def test_multi_crop_bad_inputs() -> None:
    with pytest.raises(ValueError, match="V >= 2"):
        multi_crop_nt_xent_loss(torch.zeros(1, 3, 2), temperature=0.1)
    with pytest.raises(ValueError, match="global_views"):
        multi_crop_nt_xent_loss(torch.ones(3, 3, 2), temperature=0.1, global_views=4)
