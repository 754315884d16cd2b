import itertools
import math

import pytest
import torch

from sslgraph.losses.dino import dino_loss, teacher_batch_mean, updated_center

LN2 = math.log(2.0)


def _logits(*probabilities: list[float], temp: float) -> torch.Tensor:
    """Logits whose softmax at ``temp`` is the given (proportional) distribution: temp * log(p)."""
    return temp * torch.log(torch.tensor(probabilities, dtype=torch.float64))


def _hand_example() -> tuple[torch.Tensor, torch.Tensor]:
    # Teacher at temperature 0.5: view 1 -> [1/4, 1/2, 1/4], view 2 -> [1/4, 1/4, 1/2].
    teacher = torch.stack([_logits([1, 2, 1], temp=0.5), _logits([1, 1, 2], temp=0.5)])
    # Student at temperature 0.1: view 1 -> [1/4, 1/4, 1/2], view 2 -> [1/2, 1/4, 1/4].
    student = torch.stack([_logits([1, 1, 2], temp=0.1), _logits([2, 1, 1], temp=0.1)])
    return student.float(), teacher.float()


def test_matches_the_hand_computed_value_with_a_zero_centre():
    student, teacher = _hand_example()
    loss = dino_loss(student, teacher, torch.zeros(1, 3), student_temp=0.1, teacher_temp=0.5)
    # log s1 = [-2 ln2, -2 ln2, -ln2], log s2 = [-ln2, -2 ln2, -2 ln2]
    # H(t2, s1) = 1/4*2 + 1/4*2 + 1/2*1 = 1.5 ln2;  H(t1, s2) = 1/4*1 + 1/2*2 + 1/4*2 = 1.75 ln2
    expected = (1.5 + 1.75) / 2 * LN2
    assert loss.item() == pytest.approx(expected, abs=1e-6)


def test_the_centre_shifts_the_teacher_probabilities():
    student, teacher = _hand_example()
    center = _logits([1, 2, 1], temp=0.5).float()
    loss = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.5)
    # Centred teacher: view 1 -> [1, 1, 1]/3, view 2 -> [1, 1/2, 2]/3.5 = [2/7, 1/7, 4/7].
    # H(t2, s1) = 2/7*2 + 1/7*2 + 4/7*1 = 10/7 ln2;  H(t1, s2) = 1/3*1 + 1/3*2 + 1/3*2 = 5/3 ln2
    expected = (10 / 7 + 5 / 3) / 2 * LN2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    uncentred = dino_loss(student, teacher, torch.zeros(1, 3), student_temp=0.1, teacher_temp=0.5)
    assert abs(loss.item() - uncentred.item()) > 0.05


def test_averages_over_the_batch():
    student, teacher = _hand_example()
    # Sample 2 repeats sample 1 with the views swapped: H(t1, s2) = 1.75 ln2 and H(t2, s1) = 1.5 ln2 again.
    student_b = torch.cat([student, student.flip(0)], dim=1)
    teacher_b = torch.cat([teacher, teacher.flip(0)], dim=1)
    loss = dino_loss(student_b, teacher_b, torch.zeros(1, 3), student_temp=0.1, teacher_temp=0.5)
    assert loss.item() == pytest.approx(1.625 * LN2, abs=1e-6)


def test_symmetric_in_the_views():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 7), torch.randn(2, 4, 7)
    center = torch.randn(1, 7)
    a = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    b = dino_loss(student.flip(0), teacher.flip(0), center, student_temp=0.1, teacher_temp=0.04)
    torch.testing.assert_close(a, b)


def test_more_views_match_a_brute_force_pair_loop():
    torch.manual_seed(0)
    views, batch, k = 3, 5, 6
    student, teacher, center = torch.randn(views, batch, k), torch.randn(views, batch, k), torch.randn(1, k)
    loss = dino_loss(student, teacher, center, student_temp=0.2, teacher_temp=0.07)
    terms = []
    for a, b in itertools.permutations(range(views), 2):
        t = torch.softmax((teacher[a] - center) / 0.07, dim=-1)
        s = torch.log_softmax(student[b] / 0.2, dim=-1)
        for i in range(batch):
            terms.append(-(t[i] * s[i]).sum())
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_multi_crop_teacher_sees_the_global_views_and_the_student_all_of_them():
    torch.manual_seed(1)
    views, teacher_views, batch, k = 5, 2, 3, 6  # two global views, three local crops
    student, teacher = torch.randn(views, batch, k), torch.randn(teacher_views, batch, k)
    center = torch.randn(1, k)
    loss = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    terms = []
    for a in range(teacher_views):
        for b in range(views):
            if a != b:
                t = torch.softmax((teacher[a] - center) / 0.04, dim=-1)
                terms += [-(t[i] * torch.log_softmax(student[b] / 0.1, dim=-1)[i]).sum() for i in range(batch)]
    assert len(terms) == teacher_views * (views - 1) * batch  # 2 x 4 pairs
    torch.testing.assert_close(loss, torch.stack(terms).mean())


def test_only_the_student_receives_gradient():
    student = torch.randn(2, 3, 5, requires_grad=True)
    teacher = torch.randn(2, 3, 5, requires_grad=True)
    dino_loss(student, teacher, torch.zeros(1, 5), student_temp=0.1, teacher_temp=0.04).backward()
    assert student.grad is not None and student.grad.abs().sum() > 0
    assert teacher.grad is None


def test_computes_in_float32_under_autocast():
    torch.manual_seed(0)
    student, teacher = torch.randn(2, 4, 9), torch.randn(2, 4, 9)
    center = torch.zeros(1, 9)
    reference = dino_loss(student, teacher, center, student_temp=0.1, teacher_temp=0.04)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = dino_loss(student.bfloat16(), teacher.bfloat16(), center, student_temp=0.1, teacher_temp=0.04)
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, reference, rtol=0.05, atol=0.05)


def test_rejects_bad_shapes():
    with pytest.raises(ValueError, match="V, B, K"):
        dino_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 5), torch.zeros(1, 4), student_temp=0.1, teacher_temp=0.1)
    with pytest.raises(ValueError, match="T <= V"):  # the teacher never sees more views than the student
        dino_loss(torch.randn(2, 3, 4), torch.randn(3, 3, 4), torch.zeros(1, 4), student_temp=0.1, teacher_temp=0.1)
    with pytest.raises(ValueError, match="2 views"):
        dino_loss(torch.randn(1, 3, 4), torch.randn(1, 3, 4), torch.zeros(1, 4), student_temp=0.1, teacher_temp=0.1)
    with pytest.raises(ValueError, match="center"):
        dino_loss(torch.randn(2, 3, 4), torch.randn(2, 3, 4), torch.zeros(4), student_temp=0.1, teacher_temp=0.1)


def test_teacher_batch_mean_averages_views_and_samples():
    teacher = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    mean = teacher_batch_mean(teacher)
    assert mean.shape == (1, 2)
    torch.testing.assert_close(mean, torch.tensor([[4.0, 5.0]]))


def test_updated_center_is_an_ema():
    center = torch.tensor([[1.0, 2.0]])
    batch_mean = torch.tensor([[3.0, -2.0]])
    new = updated_center(center, batch_mean, momentum=0.9)
    # 0.9 * 1 + 0.1 * 3 = 1.2;  0.9 * 2 + 0.1 * (-2) = 1.6
    torch.testing.assert_close(new, torch.tensor([[1.2, 1.6]]))
    assert torch.equal(center, torch.tensor([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="same shape"):
        updated_center(center, torch.zeros(1, 3), momentum=0.9)
