import math

import pytest
import torch

from sslgraph.eval.knn import knn_accuracy, knn_predict


def _brute_force(train, train_labels, test, k, temperature, num_classes):
    """Per-sample Python reference of the weighted vote."""
    preds = []
    for row in test.tolist():
        sims = []
        for j, other in enumerate(train.tolist()):
            dot = sum(a * b for a, b in zip(row, other))
            norm = math.sqrt(sum(a * a for a in row)) * math.sqrt(sum(b * b for b in other))
            sims.append((dot / norm, j))
        sims.sort(key=lambda s: -s[0])
        scores = [0.0] * num_classes
        for sim, j in sims[:k]:
            scores[int(train_labels[j])] += math.exp(sim / temperature)
        preds.append(max(range(num_classes), key=lambda c: (scores[c], -c)))
    return torch.tensor(preds)


@pytest.mark.parametrize("temperature", [0.07, 0.5])
def test_knn_predict_matches_brute_force(temperature):
    gen = torch.Generator().manual_seed(0)
    train = torch.randn(40, 6, generator=gen)
    # Unbalanced classes: class 3 has only 2 members, so k = 10 and 25 exceed some class counts.
    train_labels = torch.tensor([0] * 15 + [1] * 13 + [2] * 10 + [3] * 2)
    test = torch.randn(17, 6, generator=gen)
    ks = [1, 3, 10, 25]
    got = knn_predict(train, train_labels, test, k=ks, temperature=temperature, num_classes=4, chunk_size=5)
    for k in ks:
        expected = _brute_force(train, train_labels, test, k, temperature, 4)
        assert torch.equal(got[k], expected), k


def test_knn_chunking_invariance():
    gen = torch.Generator().manual_seed(1)
    train = torch.randn(50, 8, generator=gen)
    labels = torch.randint(0, 5, (50,), generator=gen)
    test = torch.randn(23, 8, generator=gen)
    ref = knn_predict(train, labels, test, k=[5, 20], chunk_size=1000)
    for chunk in (1, 4, 7, 23):
        got = knn_predict(train, labels, test, k=[5, 20], chunk_size=chunk)
        for k in ref:
            assert torch.equal(got[k], ref[k])


def test_knn_hand_computed_vote_and_tie():
    train = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    labels = torch.tensor([0, 1, 1])
    test = torch.tensor([[1.0, 0.1]])
    # k = 1: the nearest point is [1, 0] (class 0).
    # k = 3: class 0 weight exp(cos0/T); class 1 gets two weights and wins with a large T.
    out = knn_predict(train, labels, test, k=[1, 3], temperature=10.0)
    assert out[1].tolist() == [0]
    assert out[3].tolist() == [1]
    # Exact tie between classes 1 and 2 (symmetric neighbours): the lower class wins.
    train = torch.tensor([[1.0, 1.0], [1.0, -1.0]])
    out = knn_predict(train, torch.tensor([2, 1]), torch.tensor([[1.0, 0.0]]), k=2, num_classes=3)
    assert out[2].tolist() == [1]


def test_knn_k_larger_than_train_set_and_scale_invariance():
    gen = torch.Generator().manual_seed(2)
    train = torch.randn(6, 3, generator=gen)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    test = torch.randn(4, 3, generator=gen)
    a = knn_predict(train, labels, test, k=[6, 100])
    assert torch.equal(a[6], a[100])
    b = knn_predict(train * 7.0, labels, test * 0.3, k=6)
    assert torch.equal(a[6], b[6])


def test_knn_accuracy_percent_on_separable_clusters():
    gen = torch.Generator().manual_seed(3)
    centres = torch.eye(4) * 10
    train_labels = torch.arange(4).repeat_interleave(10)
    test_labels = torch.arange(4).repeat_interleave(5)
    train = centres[train_labels] + torch.randn(40, 4, generator=gen)
    test = centres[test_labels] + torch.randn(20, 4, generator=gen)
    acc = knn_accuracy(train, train_labels, test, test_labels, ks=[1, 10])
    assert acc == {1: 100.0, 10: 100.0}
    wrong = knn_accuracy(train, train_labels, test, (test_labels + 1) % 4, ks=5)
    assert wrong == {5: 0.0}


def test_knn_errors_name_the_argument():
    with pytest.raises(ValueError, match="train_labels"):
        knn_predict(torch.randn(4, 2), torch.zeros(3, dtype=torch.long), torch.randn(2, 2), k=1)
    with pytest.raises(ValueError, match="k must be"):
        knn_predict(torch.randn(4, 2), torch.zeros(4, dtype=torch.long), torch.randn(2, 2), k=[0])
