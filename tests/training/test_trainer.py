"""The pretraining loop without files: one training step against hand-computed updates, the loop's outputs,
resume from a state in memory, and a NaN loss."""

from __future__ import annotations

import copy
import math
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F

import sslgraph.training.objectives as objectives_module
import sslgraph.training.trainer as trainer_module
from sslgraph.config import Config, load_config
from sslgraph.errors import ConfigError, NonFiniteLossError
from sslgraph.eval.features import network_fingerprint
from sslgraph.training import MemorySink, Trainer
from sslgraph.utils.misc import native_bf16
from tests.conftest import tiny_overrides

CPU = torch.device("cpu")


def _cfg(image_root: Path, **kwargs: Any) -> Config:
    extra = kwargs.pop("extra", [])
    return load_config(overrides=[*tiny_overrides(**kwargs), *extra], data_root=str(image_root))


def test_one_training_step_schedules_update_ema_and_centre(image_root: Path) -> None:
    cfg = _cfg(image_root, method="dino", extra=["optim.precision=fp32", "optim.clip_grad=0",  # exact references
                                                  "optim.weight_decay=0.1", "optim.weight_decay_end=0.3",
                                                  "optim.momentum_teacher=0.9"])
    trainer = Trainer(cfg, device=CPU)
    seen: dict[str, torch.Tensor] = {}
    trainer.method.after_step = lambda **kw: seen.update(kw)  # type: ignore[method-assign]
    trainer.method.uses_step_features = True  # as adasim/graph: the hook gets crop-1 features of both streams
    trainer.student.train()
    trainer.teacher.train()
    gen = torch.Generator().manual_seed(0)
    batch, step = 8, 2
    crop1, crop2 = torch.randn(2, batch, 3, 32, 32, generator=gen)
    indices = torch.arange(batch) * 3
    # Make the teacher differ from the student, so the EMA has something to move.
    with torch.no_grad():
        for p in trainer.teacher.parameters():
            p.add_(0.01 * torch.randn(p.shape, generator=gen))
        _, teacher_logits = trainer.teacher(torch.cat([crop1, crop2]))
    student_before = copy.deepcopy(trainer.student.state_dict())
    teacher_before = copy.deepcopy(trainer.teacher.state_dict())
    center_before = trainer.objective.center.clone()

    loss = trainer.training_step([crop1, crop2], indices, epoch=0, step=step)

    assert torch.isfinite(loss)
    lr, wd = float(trainer.lr_schedule[step]), float(trainer.wd_schedule[step])
    momentum = float(trainer.momentum_schedule[step])
    assert 0 < wd and 0 < momentum < 1
    groups = trainer.optimizer.param_groups
    assert {g["apply_wd"] for g in groups} == {True, False}
    names = {id(p): name for name, p in trainer.student.named_parameters()}
    for group in groups:
        assert group["lr"] == pytest.approx(lr)
        assert group["weight_decay"] == pytest.approx(wd if group["apply_wd"] else 0.0)
        for p in group["params"]:
            name, before = names[id(p)], student_before[names[id(p)]]
            if p.grad is None:  # the last layer is frozen in epoch 0 (optim.freeze_last_layer=1)
                assert name.startswith("head.last_layer"), name
                assert torch.equal(p, before)
                continue
            # AdamW's first step: decoupled decay, then lr * m_hat / (sqrt(v_hat) + eps) with m_hat = g, v_hat = g^2.
            expected = before * (1 - lr * group["weight_decay"]) - lr * p.grad / (p.grad.abs() + 1e-8)
            torch.testing.assert_close(p.detach(), expected, rtol=1e-5, atol=1e-7, msg=name)
    student_after = trainer.student.state_dict()
    for name, value in trainer.teacher.state_dict().items():
        if value.is_floating_point():
            expected = momentum * teacher_before[name] + (1 - momentum) * student_after[name]
            torch.testing.assert_close(value, expected, rtol=1e-5, atol=1e-7, msg=name)
    expected_center = cfg.optim.center_momentum * center_before + (1 - cfg.optim.center_momentum) * \
        teacher_logits.mean(dim=0, keepdim=True)
    torch.testing.assert_close(trainer.objective.center, expected_center, rtol=1e-5, atol=1e-6)
    assert torch.equal(seen["indices"], indices)
    assert seen["teacher_feats"].shape == seen["student_feats"].shape == (batch, trainer.embed_dim)


def test_fit_hands_records_checkpoints_and_graphs_to_the_sink(image_root: Path) -> None:
    sink = MemorySink()
    trainer = Trainer(_cfg(image_root), device=CPU, sink=sink)
    trainer.fit()
    assert [r["epoch"] for r in sink.records] == [-1, 0, 1]
    assert sink.checkpoint is not None and sink.checkpoint["epoch"] == 2
    assert set(sink.graphs) == {"teacher", "student"}
    assert sink.graphs["teacher"].num_nodes == 64 + 40
    # The clean features embedded for the monitor and the graphs go to the sink too, unnormalised, with the
    # fingerprints of the networks that made them; the graphs hold the same features, L2-normalised.
    record = sink.features
    assert record is not None and set(record["features"]) == {"teacher", "student"}
    for stream in ("teacher", "student"):
        network = (trainer.teacher if stream == "teacher" else trainer.student).backbone
        assert record["networks"][stream] == network_fingerprint(network)
        train, test = record["features"][stream]["train"], record["features"][stream]["test"]
        assert train.shape == (64, trainer.embed_dim) and test.shape[0] == 40
        assert not torch.allclose(train.norm(dim=1), torch.ones(64))
        graph = sink.graphs[stream]
        torch.testing.assert_close(graph.x, F.normalize(torch.cat([train, test]), dim=1))
    assert record["settings"]["train"]["size"] == 64 and "Normalize" in record["settings"]["transform"]
    quiet = MemorySink()
    Trainer(_cfg(image_root, extra=["eval.reuse_features=false"]), device=CPU, sink=quiet).fit()
    assert quiet.features is None and set(quiet.graphs) == {"teacher", "student"}


def test_restored_state_continues_exactly_like_an_uninterrupted_run(image_root: Path) -> None:
    cfg = _cfg(image_root, epochs=3, extra=["monitor.knn_every=0", "model.drop_path_rate=0.1"])
    reference = MemorySink()
    Trainer(cfg, device=CPU, sink=reference).fit()

    class StopAfterFirstEpoch(MemorySink):
        def save_checkpoint(self, state: dict[str, Any]) -> None:
            super().save_checkpoint(state)
            raise KeyboardInterrupt

    interrupted = StopAfterFirstEpoch()
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, device=CPU, sink=interrupted).fit()
    assert interrupted.checkpoint is not None and interrupted.checkpoint["epoch"] == 1
    resumed = MemorySink()
    trainer = Trainer(cfg, device=CPU, sink=resumed)
    trainer.load_state_dict(interrupted.checkpoint)
    trainer.fit()
    assert [r["epoch"] for r in resumed.records] == [1, 2], "a restored run neither re-initialises nor repeats"
    assert reference.checkpoint is not None and resumed.checkpoint is not None
    for net in ("student", "teacher"):
        for key, value in reference.checkpoint[net].items():
            assert torch.equal(resumed.checkpoint[net][key], value), f"{net}.{key}"
    for stream, graph in reference.graphs.items():
        assert torch.equal(resumed.graphs[stream].edge_index, graph.edge_index), stream


def test_nan_loss_stops_with_clear_error_and_keeps_last_good_checkpoint(
        image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real_loss = objectives_module.dino_loss
    calls = {"n": 0}

    def loss_turning_nan(*args, **kwargs):
        calls["n"] += 1
        value = real_loss(*args, **kwargs)
        return value * float("nan") if calls["n"] > 4 else value  # 4 steps per epoch: NaN in epoch 1

    monkeypatch.setattr(objectives_module, "dino_loss", loss_turning_nan)
    sink = MemorySink()
    trainer = Trainer(_cfg(image_root, method="dino", epochs=3), device=CPU, sink=sink)
    with pytest.raises(NonFiniteLossError, match="non-finite loss at epoch 1"):
        trainer.fit()
    assert sink.checkpoint is not None and sink.checkpoint["epoch"] == 1


def test_simclr_step_skips_the_teacher_unless_the_method_needs_its_features(image_root: Path) -> None:
    for method, wants_features in (("dino", False), ("graph", True)):
        cfg = _cfg(image_root, method=method, extra=["method.objective=simclr", "optim.optimizer=sgd",
                                                     "model.out_dim=16", "model.head_hidden_dim=32"])
        trainer = Trainer(cfg, device=CPU)
        calls: list[torch.Tensor] = []
        teacher_forward = trainer.teacher.forward
        trainer.teacher.forward = lambda x: calls.append(x) or teacher_forward(x)  # type: ignore[method-assign]
        seen: dict[str, torch.Tensor] = {}
        trainer.method.after_step = lambda **kw: seen.update(kw)  # type: ignore[method-assign]
        views, indices = trainer._views(next(iter(trainer.batches)), epoch=0)
        loss = trainer.training_step(views, indices, epoch=0, step=0)
        assert torch.isfinite(loss) and not calls  # the teacher's head is never run for simclr
        assert bool(seen) is wants_features
        if wants_features:
            assert seen["teacher_feats"].shape == (len(indices), trainer.embed_dim)
        assert isinstance(trainer.optimizer, torch.optim.SGD)


@pytest.mark.parametrize("objective", ["dino", "simclr"])
def test_multi_crop_local_views_reach_only_the_student(image_root: Path, objective: str) -> None:
    cfg = _cfg(image_root, method="graph", extra=[f"method.objective={objective}", "aug.local_crops=2",
                                                   "aug.local_crop_size=16"])
    trainer = Trainer(cfg, device=CPU)
    student_sizes: list[tuple[int, ...]] = []
    teacher_sizes: list[tuple[int, ...]] = []
    student_forward, teacher_forward = trainer.student_forward.forward, trainer.teacher.forward
    trainer.student_forward.forward = (  # type: ignore[method-assign]
        lambda x: student_sizes.append(tuple(x.shape)) or student_forward(x))
    trainer.teacher.forward = lambda x: teacher_sizes.append(tuple(x.shape)) or teacher_forward(x)  # type: ignore
    seen: dict[str, torch.Tensor] = {}
    trainer.method.after_step = lambda **kw: seen.update(kw)  # type: ignore[method-assign]
    views, indices = trainer._views(next(iter(trainer.batches)), epoch=0)
    b = len(indices)
    assert [tuple(v.shape[-2:]) for v in views] == [(32, 32)] * 2 + [(16, 16)] * 2
    loss = trainer.training_step(views, indices, epoch=0, step=0)
    assert torch.isfinite(loss)
    assert student_sizes == [(2 * b, 3, 32, 32), (2 * b, 3, 16, 16)]  # globals, then the local crops
    assert teacher_sizes == ([(2 * b, 3, 32, 32)] if objective == "dino" else [])  # never a local crop
    assert seen["student_feats"].shape == (b, trainer.embed_dim)  # banks and graphs: global crop 1 only


def test_compiled_views_without_a_cpp_compiler_fall_back_to_eager_in_one_line(
        image_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """``aug.compile=true`` (the CPU preset's) on a machine without a C++ compiler: the same views, made eagerly,
    and one line says so, instead of a run that cannot start."""
    monkeypatch.setattr(trainer_module, "missing_cpp_compiler", lambda device: "no C++ compiler here")
    trainer = Trainer(_cfg(image_root, extra=["aug.compile=true"]), device=CPU)
    assert trainer.augment.fused is None and trainer.augment._views is None
    lines = [line for line in capsys.readouterr().out.splitlines() if "aug.compile" in line]
    assert len(lines) == 1 and "no C++ compiler here" in lines[0] and "without it" in lines[0]


def test_resnet_local_crops_that_end_as_a_1x1_map_are_refused_under_cpu_bf16(image_root: Path) -> None:
    extra = ["model.backbone=resnet18", "model.cifar_stem=false", "aug.local_crops=2", "aug.local_crop_size=16"]
    with pytest.raises(ConfigError, match="aug.local_crop_size: 16 px"):
        Trainer(_cfg(image_root, extra=[*extra, "optim.precision=bf16"]), device=CPU)
    Trainer(_cfg(image_root, extra=[*extra, "optim.precision=fp32"]), device=CPU)  # float32 is fine
    Trainer(_cfg(image_root, extra=[*extra[:-1], "aug.local_crop_size=24", "optim.precision=bf16"]), device=CPU)


def test_a_teacher_that_never_runs_follows_the_students_batch_norm_statistics(image_root: Path) -> None:
    extra = ["method.objective=simclr", "optim.optimizer=sgd", "model.out_dim=16", "model.head_hidden_dim=32",
             "optim.momentum_teacher=0.9", "model.backbone=resnet_mini"]
    for method, follows in (("dino", True), ("graph", False)):
        trainer = Trainer(_cfg(image_root, method=method, extra=extra), device=CPU)
        m = float(trainer.momentum_schedule[0])
        name = next(n for n, b in trainer.teacher.named_buffers() if n.endswith("running_mean"))
        teacher_before = dict(trainer.teacher.named_buffers())[name].clone()
        views, indices = trainer._views(next(iter(trainer.batches)), epoch=0)
        trainer.training_step(views, indices, epoch=0, step=0)
        teacher_after = dict(trainer.teacher.named_buffers())[name]
        student = dict(trainer.student.named_buffers())[name]
        if follows:  # EMA of the student's statistics after its one train-mode step
            torch.testing.assert_close(teacher_after, m * teacher_before + (1 - m) * student)
            assert not torch.equal(teacher_after, teacher_before)
        else:  # the graph method's teacher ran its backbone in train mode: its own statistics, no EMA
            assert not torch.allclose(teacher_after, m * teacher_before + (1 - m) * student)


def test_budget_sets_the_number_of_iterations_and_resume_keeps_it(image_root: Path) -> None:
    cfg = _cfg(image_root, extra=["optim.budget_minutes=0.01", "optim.epochs=50"])
    trainer = Trainer(cfg, device=CPU)
    # 0.6 s of budget at 20 ms per step -> 30 iterations
    trainer._set_budget(0.02, steps_done=trainer_module.CALIBRATION_STEPS)
    assert trainer.total_iters == 30 and len(trainer.lr_schedule) == 30
    assert trainer.epochs == -(-30 // trainer.iters_per_epoch)
    state = trainer.state_dict(epoch=0)
    again = Trainer(cfg, device=CPU)
    again.load_state_dict(state)
    assert again.total_iters == 30 and torch.equal(again.lr_schedule, trainer.lr_schedule)
    # The budget ends the run before optim.epochs: the checkpoint says it finished, so the pipeline skips it.
    last = trainer.epochs - 1
    assert trainer.state_dict(epoch=last)["finished"] and not trainer.state_dict(epoch=last - 1)["finished"]
    # Slower than the whole budget: still a few steps past the calibration.
    trainer._set_budget(10.0, steps_done=trainer_module.CALIBRATION_STEPS)
    assert trainer.total_iters == trainer_module.CALIBRATION_STEPS + 1


def test_budget_replans_from_the_measured_pace_and_resume_rebuilds_the_same_schedules(image_root: Path) -> None:
    cfg = _cfg(image_root, extra=["optim.budget_minutes=0.01", "optim.epochs=50", "optim.warmup_epochs=0"])
    trainer = Trainer(cfg, device=CPU)
    ipe = trainer.iters_per_epoch
    # 0.6 s of budget at 20 ms per step -> 30 iterations
    trainer._set_budget(0.02, steps_done=trainer_module.CALIBRATION_STEPS)
    trainer._calibrated = True  # as the loop marks it after _set_budget
    assert trainer.total_iters == 30
    before = trainer.lr_schedule.clone()
    # The first epoch ran 2.5 times as slowly as calibrated: the rest of the 0.6 s fits 8 more steps.
    trainer._replan_budget(epoch=0, seconds=0.05 * ipe)
    expected = ipe + int((0.6 - 0.05 * ipe) / 0.05)
    assert expected - ipe in (7, 8) and trainer.total_iters == expected  # 0.4 s / 0.05 s, floored
    assert trainer._budget_spent == pytest.approx(0.05 * ipe)
    # The first epoch's values stay; the rest of the cosine is squeezed and still ends where it ended.
    assert torch.equal(trainer.lr_schedule[:ipe + 1], before[:ipe + 1])
    assert float(trainer.lr_schedule[-1]) == float(before[-1])
    assert float(trainer.momentum_schedule[-1]) == 1.0
    assert bool((trainer.lr_schedule[1:] <= trainer.lr_schedule[:-1]).all())  # still decreasing
    again = Trainer(cfg, device=CPU)
    again.load_state_dict(trainer.state_dict(epoch=0))
    assert again.total_iters == expected and again._budget_spent == pytest.approx(0.05 * ipe)
    for name in ("lr_schedule", "wd_schedule", "momentum_schedule"):
        assert torch.equal(getattr(again, name), getattr(trainer, name)), name
    # A budget already spent ends the run with the epoch just finished.
    again._replan_budget(epoch=1, seconds=0.5)
    assert again.total_iters == 2 * ipe and again.state_dict(epoch=1)["finished"]


def test_a_stage_budget_gives_the_steps_what_the_stage_has_left_and_resume_keeps_its_clock(
        image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(image_root, extra=["optim.budget_minutes=0.05", "optim.budget_scope=stage", "optim.epochs=50",
                                  "optim.warmup_epochs=0"])
    trainer = Trainer(cfg, device=CPU)
    ipe = trainer.iters_per_epoch
    clock = {"stage": 0.5}
    monkeypatch.setattr(trainer, "_stage_seconds", lambda: clock["stage"])
    monkeypatch.setattr(trainer, "_end_seconds", lambda: 0.5)
    # 3 s of stage: 0.5 s spent before the calibration's 15 steps ended, 0.5 s kept for the end of training, the
    # 2 s left at 20 ms per step are 100 more steps.
    trainer._set_budget(0.02, steps_done=15)
    trainer._calibrated = True
    assert trainer.total_iters == 115 and trainer._end_reserve == 0.5
    # The first epoch ran at 30 ms per step and the stage's clock reads 1.8 s: 3 - 1.8 - 0.5 = 0.7 s are left,
    # 23 steps at that pace (0.7 / 0.03 = 23.3, floored).
    clock["stage"] = 1.8
    trainer._replan_budget(epoch=0, seconds=0.03 * ipe)
    assert trainer.total_iters == ipe + 23 and trainer._budget_spent == pytest.approx(1.8)
    state = trainer.state_dict(epoch=0)
    assert state["budget_plan"]["spent_seconds"] == 1.8 and state["budget_plan"]["end_reserve_seconds"] == 0.5
    # A resumed stage counts on from the checkpoint's clock, with the same reserve and schedules.
    again = Trainer(cfg, device=CPU)
    again.load_state_dict(state)
    assert again._stage_before == 1.8 and again._end_reserve == 0.5 and again.total_iters == ipe + 23
    assert again._stage_seconds() >= 1.8
    for name in ("lr_schedule", "wd_schedule", "momentum_schedule"):
        assert torch.equal(getattr(again, name), getattr(trainer, name)), name


def test_a_deadline_shortens_a_stage_budget_and_never_lengthens_it(
        image_root: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    cfg = _cfg(image_root, extra=["optim.budget_minutes=0.05", "optim.budget_scope=stage", "optim.epochs=50",
                                  "optim.warmup_epochs=0"])
    clock = {"stage": 0.5, "deadline": 1.5}
    late = Trainer(cfg, device=CPU, deadline=1e12)  # a deadline after the budget's end: the budget decides
    trainer = Trainer(cfg, device=CPU, deadline=1e12)
    ipe = trainer.iters_per_epoch
    for t in (late, trainer):
        monkeypatch.setattr(t, "_stage_seconds", lambda: clock["stage"])
        monkeypatch.setattr(t, "_end_seconds", lambda: 0.5)
    monkeypatch.setattr(trainer, "_deadline_seconds", lambda: clock["deadline"])
    # As in the budget-only plan above: 3 - 0.5 - 0.5 = 2 s at 20 ms per step, 100 steps after the 15.
    late._set_budget(0.02, steps_done=15)
    assert late.total_iters == 115 and "time limit" not in capsys.readouterr().out
    # The deadline is 1.5 s away, sooner than the budget's 2.5 s: 1.5 - 0.5 reserved = 1 s, 50 steps.
    trainer._set_budget(0.02, steps_done=15)
    trainer._calibrated = True
    assert trainer.total_iters == 65 and "the time limit leaves" in capsys.readouterr().out
    # After the first epoch (30 ms per step) the deadline is 0.9 s away: 0.9 - 0.5 = 0.4 s, 13 steps (13.3).
    clock.update(stage=1.0, deadline=0.9)
    trainer._replan_budget(epoch=0, seconds=0.03 * ipe)
    assert trainer.total_iters == ipe + 13
    # The deadline passed: the run ends with the epoch just finished.
    clock.update(stage=1.2, deadline=-0.1)
    trainer._replan_budget(epoch=1, seconds=0.03 * ipe)
    assert trainer.total_iters == 2 * ipe and trainer.state_dict(epoch=1)["finished"]


def test_a_deadline_needs_a_stage_budget(image_root: Path) -> None:
    with pytest.raises(ValueError, match="budget_scope=stage"):
        Trainer(_cfg(image_root, extra=["optim.budget_minutes=1"]), device=CPU, deadline=1e12)


def test_the_end_of_training_reserve_counts_the_embedding_passes_it_will_make(
        image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg(image_root, extra=["optim.budget_minutes=1", "optim.budget_scope=stage"])
    trainer = Trainer(cfg, device=CPU)
    dino = Trainer(_cfg(image_root, method="dino", extra=["monitor.knn_every=0"]), device=CPU)
    monitored = Trainer(_cfg(image_root, method="dino", extra=["monitor.knn_every=1"]), device=CPU)
    n_train, n_test = len(trainer.eval_sets["train"]), len(trainer.eval_sets["test"])
    assert (n_train, n_test) == (64, 40)
    passes: list[tuple[str, str, int | None]] = []
    monkeypatch.setattr(trainer, "_embed_pass", lambda stream, split, *, desc, limit=None: passes.append(
        (stream, split, limit)))
    # A fake clock: each timed pass over the first 40 held-out images (4 batches of 64, capped by the split) takes
    # 2 s, i.e. 20 images per second.
    ticks = iter([10.0, 12.0, 20.0, 22.0])
    monkeypatch.setattr(trainer_module, "time", type("FakeTime", (), {
        "perf_counter": staticmethod(lambda: next(ticks))}))
    # The graph method exports clean features of both streams (train and test) and the kNN monitor embeds the
    # teacher's: 2 x (64 + 40) images at 20 per second = 10.4 s, times the margin, plus the fixed part.
    expected = trainer_module.END_MARGIN * 2 * (64 + 40) / 20 + trainer_module.END_FIXED_SECONDS
    assert trainer._end_seconds() == pytest.approx(expected) and passes == [("teacher", "test", 40)]
    assert trainer.method.final_embeddings() == {(s, p) for s in ("teacher", "student") for p in ("train", "test")}
    # dino embeds nothing at the end but the last kNN monitor's teacher passes: 64 + 40 images.
    monkeypatch.setattr(monitored, "_embed_pass", lambda stream, split, *, desc, limit=None: None)
    assert monitored._end_seconds() == pytest.approx(
        trainer_module.END_MARGIN * (64 + 40) / 20 + trainer_module.END_FIXED_SECONDS)
    # Without a monitor and without embeddings at the end (dino) there is only the fixed part, and no pass is timed.
    assert dino._end_seconds() == trainer_module.END_FIXED_SECONDS


def test_the_timed_embedding_pass_embeds_the_first_images_and_leaves_the_teacher_training(image_root: Path) -> None:
    trainer = Trainer(_cfg(image_root), device=CPU)
    trainer.teacher.train()
    part = trainer._embed_pass("teacher", "test", desc=None, limit=10)
    whole = trainer._embed_pass("teacher", "test", desc=None)
    assert part.shape == (10, trainer.embed_dim) and whole.shape[0] == 40
    torch.testing.assert_close(part, whole[:10])
    assert trainer.teacher.training and trainer.teacher.backbone.training
    assert trainer._end_seconds() > trainer_module.END_FIXED_SECONDS


def test_a_stage_budget_run_ends_and_records_its_reserve(image_root: Path) -> None:
    cfg = _cfg(image_root, method="dino", batch=2, extra=[
        "optim.budget_minutes=0.05", "optim.budget_scope=stage", "optim.epochs=3", "monitor.knn_at_init=false"])
    sink = MemorySink()
    trainer = Trainer(cfg, device=CPU, sink=sink)
    trainer.fit()
    plan = sink.checkpoint["budget_plan"]
    assert sink.checkpoint["finished"] and plan["end_reserve_seconds"] > trainer_module.END_FIXED_SECONDS
    assert trainer.total_iters >= trainer_module.CALIBRATION_STEPS + 1 and plan["spent_seconds"] > 0


@pytest.mark.parametrize(("override", "key"), [
    (["optim.budget_scope=stage"], "optim.budget_scope"),
    (["optim.budget_minutes=0"], "optim.budget_minutes"),
    (["optim.budget_minutes=-2"], "optim.budget_minutes"),
])
def test_budget_settings_without_meaning_are_refused(image_root: Path, override: list[str], key: str) -> None:
    with pytest.raises(ConfigError, match=key):
        _cfg(image_root, extra=override)


def test_teacher_momentum_cosine_spans_every_iteration_of_a_budget_run(
        image_root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # A fake clock (its first tick is the trainer's own start): steps 3..15 of the calibration take 0.12 s in all,
    # i.e. 10 ms per step, so a 0.005-minute budget (0.3 s) is 30 iterations; no real time is measured.
    ticks = iter([0.0, 0.0, 0.0, 0.12])
    monkeypatch.setattr(trainer_module, "time", type("FakeTime", (), {
        "perf_counter": staticmethod(lambda: next(ticks, 1.0))}))
    cfg = _cfg(image_root, method="dino", batch=2, extra=[
        "optim.budget_minutes=0.005", "optim.epochs=5", "optim.warmup_epochs=0", "optim.momentum_teacher=0.9",
        "monitor.knn_every=0", "monitor.knn_at_init=false", "monitor.log_every=7"])
    trainer = Trainer(cfg, device=CPU)
    ipe = trainer.iters_per_epoch
    assert ipe == 32 and trainer.total_iters == 5 * 32  # provisional: optim.epochs
    used: list[float] = []
    update = trainer._update_teacher
    trainer._update_teacher = (  # type: ignore[method-assign]
        lambda momentum, **kw: used.append(momentum) or update(momentum, **kw))
    trainer.fit()

    assert trainer.total_iters == 30 and len(used) == 30
    calibrated = trainer_module.CALIBRATION_STEPS
    for it in range(30):
        length = 29 if it >= calibrated else 5 * 32 - 1  # before the calibration: the provisional schedule
        assert used[it] == pytest.approx(1 - 0.1 * (math.cos(math.pi * it / length) + 1) / 2, abs=1e-12), it
    assert used[0] == 0.9 and used[-1] == 1.0
    assert used[22] == pytest.approx(1 - 0.05 * (1 + math.cos(math.pi * 22 / 29)))
    assert used[22] == pytest.approx(0.98630, abs=1e-5)  # 1 - 0.05 (1 + cos(22 pi / 29)) = 1 - 0.05 * 0.2740


def test_a_warmup_longer_than_the_budget_keeps_its_share_of_the_run() -> None:
    # cifar10 preset numbers: 10 of 100 epochs of warm-up, 195 iterations per epoch, a budget of 738 iterations.
    warmup = trainer_module.budget_warmup_epochs(10, epochs=100, iters_per_epoch=195, total_iters=738)
    assert warmup == pytest.approx(10 / 100 * 738 / 195)
    assert round(warmup * 195) == 74  # 10 % of the 738 iterations
    assert trainer_module.budget_warmup_epochs(0.1, epochs=100, iters_per_epoch=195, total_iters=738) == 0.1


def test_cpu_training_keeps_the_reference_optimizer_and_autocasts_only_where_bf16_is_native(image_root: Path) -> None:
    trainer = Trainer(_cfg(image_root, method="dino"), device=CPU)
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and not trainer.optimizer.defaults["fused"]
    # optim.precision=auto: bf16 only on a CPU that multiplies bf16 natively
    assert trainer.amp_dtype is (torch.bfloat16 if native_bf16(CPU) else None)
