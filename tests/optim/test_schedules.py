import math

import pytest
import torch

from sslgraph.optim.schedules import (cosine_schedule, scaled_lr, stretch_tail, teacher_momentum_schedule,
                                      teacher_temp_schedule)


def test_cosine_schedule_with_warmup_at_known_iterations():
    sched = cosine_schedule(1.0, 0.0, epochs=4, iters_per_epoch=2, warmup_epochs=1, start_warmup=0.2)
    assert sched.dtype == torch.float64 and sched.shape == (8,)
    assert sched[0].item() == pytest.approx(0.2)  # start of warm-up
    assert sched[1].item() == pytest.approx(1.0)  # end of warm-up
    assert sched[2].item() == pytest.approx(1.0)  # cosine t = 0 of T = 6
    assert sched[5].item() == pytest.approx(0.5)  # cosine t = 3 = T/2
    assert sched[7].item() == pytest.approx(0.5 * (1 - math.sqrt(3) / 2))  # last: t = 5, cos(5 pi / 6)


def test_cosine_schedule_without_warmup_runs_from_base_towards_final():
    sched = cosine_schedule(0.04, 0.4, epochs=2, iters_per_epoch=2)
    expected = [0.4 + 0.5 * (0.04 - 0.4) * (1 + math.cos(math.pi * t / 4)) for t in range(4)]
    torch.testing.assert_close(sched, torch.tensor(expected, dtype=torch.float64))


def test_cosine_schedule_rejects_bad_warmup():
    with pytest.raises(ValueError, match="warmup_epochs"):
        cosine_schedule(1.0, 0.0, epochs=2, iters_per_epoch=3, warmup_epochs=3)


def test_teacher_momentum_runs_from_m0_to_exactly_one():
    sched = teacher_momentum_schedule(0.996, epochs=1, iters_per_epoch=5)
    assert sched.shape == (5,)
    assert sched[0].item() == 0.996
    assert sched[2].item() == pytest.approx(1 - 0.004 * 0.5)  # cos(pi / 2) = 0
    assert sched[-1].item() == 1.0
    assert torch.all(sched[1:] >= sched[:-1])
    assert teacher_momentum_schedule(0.9, epochs=1, iters_per_epoch=1).tolist() == [0.9]


def test_teacher_momentum_can_end_below_one_and_stay_constant():
    sched = teacher_momentum_schedule(0.9, epochs=1, iters_per_epoch=5, end=0.98)
    assert sched[0].item() == pytest.approx(0.9) and sched[-1].item() == pytest.approx(0.98)
    assert sched[2].item() == pytest.approx(0.94)  # half-way between the two at cos(pi / 2) = 0
    assert torch.all(sched[1:] >= sched[:-1])
    assert teacher_momentum_schedule(0.99, epochs=2, iters_per_epoch=3, end=0.99).tolist() == pytest.approx([0.99] * 6)


def test_teacher_temp_warms_up_linearly_then_stays():
    sched = teacher_temp_schedule(0.02, 0.04, warmup_epochs=3, epochs=5)
    torch.testing.assert_close(sched, torch.tensor([0.02, 0.03, 0.04, 0.04, 0.04], dtype=torch.float64))
    torch.testing.assert_close(teacher_temp_schedule(0.02, 0.04, warmup_epochs=0, epochs=2),
                               torch.tensor([0.04, 0.04], dtype=torch.float64))
    with pytest.raises(ValueError, match="warmup_epochs"):
        teacher_temp_schedule(0.02, 0.04, warmup_epochs=3, epochs=2)


def test_scaled_lr_is_linear_in_the_global_batch():
    assert scaled_lr(5e-4, 256) == pytest.approx(5e-4)
    assert scaled_lr(5e-4, 1024) == pytest.approx(2e-3)
    assert scaled_lr(5e-4, 64) == pytest.approx(1.25e-4)


def test_stretch_tail_keeps_the_head_and_resamples_the_rest_onto_the_new_length():
    s = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    torch.testing.assert_close(stretch_tail(s, start=2, total=7),
                               torch.tensor([0.0, 1.0, 2.0, 2.5, 3.0, 3.5, 4.0], dtype=torch.float64))
    torch.testing.assert_close(stretch_tail(s, start=2, total=4),
                               torch.tensor([0.0, 1.0, 2.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(stretch_tail(s, start=2, total=3), torch.tensor([0.0, 1.0, 4.0], dtype=torch.float64))
    torch.testing.assert_close(stretch_tail(s, start=2, total=2), torch.tensor([0.0, 1.0], dtype=torch.float64))
    assert torch.equal(stretch_tail(s, start=1, total=5), s)  # same length: unchanged


def test_stretch_tail_rejects_a_start_outside_the_schedule():
    s = torch.zeros(4)
    with pytest.raises(ValueError, match="start"):
        stretch_tail(s, start=4, total=6)
    with pytest.raises(ValueError, match="total"):
        stretch_tail(s, start=2, total=1)
