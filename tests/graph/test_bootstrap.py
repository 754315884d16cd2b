import math
from collections import defaultdict

import pytest
import torch

from sslgraph.graph.bootstrap import sample_partners, vote


def hand_window():
    # W = 2 epochs, N = 2 samples, k = 3.
    idx = torch.tensor([
        [[0, 1, 2], [1, 0, -1]],
        [[0, 2, 3], [1, 3, 0]],
    ])
    sim = torch.tensor([
        [[1.0, 0.5, 0.25], [1.0, 0.5, 0.0]],
        [[1.0, 0.5, 0.25], [1.0, 0.75, 0.25]],
    ])
    return idx, sim


def test_vote_sums_similarities_over_the_window():
    cand, score = vote(*hand_window())
    # Sample 0: 0 -> 1 + 1, 2 -> 0.25 + 0.5, 1 -> 0.5 (absent in epoch 1 counts 0), 3 -> 0.25.
    assert cand[0].tolist() == [0, 2, 1, 3]
    torch.testing.assert_close(score[0], torch.tensor([2.0, 0.75, 0.5, 0.25]))
    # Sample 1: 1 -> 2, 0 -> 0.5 + 0.25, 3 -> 0.75 (tie with 0: lower index first), -1 ignored, padded.
    assert cand[1].tolist() == [1, 0, 3, -1]
    assert score[1, :3].tolist() == [2.0, 0.75, 0.75]
    assert score[1, 3] == float("-inf")


def reference_vote(window_idx, window_sim):
    rows = []
    for i in range(window_idx.shape[1]):
        scores = defaultdict(float)
        for w in range(window_idx.shape[0]):
            for j, s in zip(window_idx[w, i].tolist(), window_sim[w, i].tolist()):
                if j >= 0:
                    scores[j] += s
        rows.append(sorted(scores.items(), key=lambda item: (-item[1], item[0])))
    return rows


def test_vote_matches_reference_on_random_windows():
    gen = torch.Generator().manual_seed(0)
    window, num, k = 4, 30, 5
    idx = torch.stack([torch.stack([torch.randperm(8, generator=gen)[:k] for _ in range(num)])
                       for _ in range(window)])
    idx[torch.rand(idx.shape, generator=gen) < 0.1] = -1
    # Similarities on a 1/8 grid so that sums are exact and ties are real.
    sim = torch.randint(0, 8, idx.shape, generator=gen).float() / 8
    cand, score = vote(idx, sim)
    for i, expected in enumerate(reference_vote(idx, sim)):
        n = len(expected)
        assert cand[i, :n].tolist() == [j for j, _ in expected]
        assert score[i, :n].tolist() == [s for _, s in expected]
        assert (cand[i, n:] == -1).all() and (score[i, n:] == float("-inf")).all()
    assert cand.shape[1] == max(len(row) for row in reference_vote(idx, sim))


def self_best_window(num: int, num_candidates: int = 4):
    """Each sample i lists i first (sim 1) and i+1 .. i+3 (mod num) with lower similarities, in W = 2 epochs."""
    offsets = torch.arange(num_candidates)
    row = (torch.arange(num).unsqueeze(1) + offsets) % num
    sims = torch.tensor([1.0, 0.6, 0.5, 0.4])[:num_candidates].expand(num, -1)
    return torch.stack([row, row]), torch.stack([sims, sims])


def test_not_self_best_keeps_itself_whatever_the_temperature():
    idx, sim = hand_window()
    idx[:, 1] = torch.tensor([[0, 1, -1], [0, 1, 3]])  # sample 1: best candidate is 0, not itself
    partners, boot = sample_partners(idx, sim, temperature=1e6, generator=torch.Generator().manual_seed(0))
    assert partners[1] == 1 and not boot[1]


def test_tiny_temperature_picks_the_best_candidate():
    idx, sim = self_best_window(50)
    partners, boot = sample_partners(idx, sim, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert torch.equal(partners, torch.arange(50))
    assert not boot.any()


def test_large_temperature_is_uniform_over_candidates():
    num = 8000
    idx, sim = self_best_window(num)
    partners, boot = sample_partners(idx, sim, temperature=1e6, generator=torch.Generator().manual_seed(0))
    offsets = (partners - torch.arange(num)) % num
    freq = torch.bincount(offsets, minlength=4).float() / num
    torch.testing.assert_close(freq, torch.full((4,), 0.25), atol=0.03, rtol=0)
    torch.testing.assert_close(boot.float().mean(), torch.tensor(0.75), atol=0.03, rtol=0)


def test_moderate_temperature_follows_the_softmax():
    num, temperature = 8000, 0.2
    idx, sim = self_best_window(num)
    partners, _ = sample_partners(idx, sim, temperature=temperature, generator=torch.Generator().manual_seed(1))
    freq = torch.bincount((partners - torch.arange(num)) % num, minlength=4).float() / num
    # Scores are 2 x sims over W = 2 epochs, so the logits are sims / temperature.
    expected = torch.softmax(torch.tensor([1.0, 0.6, 0.5, 0.4]) / temperature, dim=0)
    torch.testing.assert_close(freq, expected, atol=0.03, rtol=0)


def test_sampling_is_deterministic_for_a_seed():
    idx, sim = self_best_window(500)
    first = sample_partners(idx, sim, temperature=1.0, generator=torch.Generator().manual_seed(7))[0]
    again = sample_partners(idx, sim, temperature=1.0, generator=torch.Generator().manual_seed(7))[0]
    other = sample_partners(idx, sim, temperature=1.0, generator=torch.Generator().manual_seed(8))[0]
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_num_candidates_one_keeps_the_best():
    idx, sim = self_best_window(100)
    partners, _ = sample_partners(idx, sim, temperature=1e6, generator=torch.Generator().manual_seed(0),
                                  num_candidates=1)
    assert torch.equal(partners, torch.arange(100))


def test_empty_windows_keep_themselves():
    idx = torch.full((2, 3, 2), -1)
    partners, boot = sample_partners(idx, torch.zeros(2, 3, 2), temperature=1.0,
                                     generator=torch.Generator().manual_seed(0))
    assert partners.tolist() == [0, 1, 2] and not boot.any()
    partners, _ = sample_partners(torch.empty(0, 3, 2, dtype=torch.long), torch.empty(0, 3, 2), temperature=1.0,
                                  generator=torch.Generator().manual_seed(0))
    assert partners.tolist() == [0, 1, 2]


def test_partially_empty_rows():
    idx, sim = self_best_window(4)
    idx[:, 2] = -1
    partners, _ = sample_partners(idx, sim, temperature=1e-4, generator=torch.Generator().manual_seed(0))
    assert partners.tolist() == [0, 1, 2, 3]


def test_rejects_bad_arguments():
    idx, sim = hand_window()
    with pytest.raises(ValueError, match="temperature"):
        sample_partners(idx, sim, temperature=0.0, generator=torch.Generator())
    with pytest.raises(ValueError, match="window_idx"):
        vote(idx[0], sim[0])
    assert math.isinf(vote(idx, sim)[1][1, -1])
