"""How long a run trains by default, its warm-ups, the printed plan, its warnings and the
wall-clock budget (wenlan_cli/engine/budget.py and its use in `wenlan pretrain`)."""

from __future__ import annotations

import io
import json

import pytest
from rich.console import Console

from wenlan_cli.config import TrainConfig
from wenlan_cli.durations import parse_duration
from wenlan_cli.errors import UsageError
from wenlan_cli.models.registry import get_model_config
from wenlan_cli.engine.budget import (
    CAPTION_RULE,
    PRETRAIN_RULE,
    LossWatch,
    StepTimer,
    TrainingPlan,
    auto_queue_warmup,
    auto_warmup,
    budget_steps,
    build_plan,
    plan_warnings,
    steps_in_budget,
)
from wenlan_cli.train.loop import Pretrainer


@pytest.mark.parametrize(
    ("images", "steps"),
    [
        (64, 2000),  # one batch: the floor of optimizer steps
        (3000, 2000),  # the unseen set (46 batches): one epoch would be 46 steps
        (10000, 2000),  # the built-in data: the same 2,000 steps `make demo` was measured with
        (12800, 2000),  # 200 batches: ten epochs meet the floor
        (12864, 2010),  # one batch more: ten epochs take over
        (210000, 32810),  # AIC-ICC's training set: ten epochs
        (2_000_000, 100_000),  # the cap
    ],
)
def test_pretrain_budget_rule_at_several_sizes(images, steps):
    assert budget_steps(images // 64, PRETRAIN_RULE) == steps


def test_caption_budget_rule_keeps_the_measured_2400_steps_on_the_built_in_data():
    assert budget_steps(10000 // 64, CAPTION_RULE) == 2400
    assert budget_steps(3000 // 64, CAPTION_RULE) == 2400
    assert budget_steps(30000 // 64, CAPTION_RULE) == 4680
    assert auto_warmup(2400, CAPTION_RULE) == 100


def test_warmup_is_a_tenth_of_the_run_capped():
    assert auto_warmup(2000, PRETRAIN_RULE) == 200
    assert auto_warmup(47, PRETRAIN_RULE) == 5
    assert auto_warmup(100_000, PRETRAIN_RULE) == 2000
    assert auto_warmup(1, PRETRAIN_RULE) == 0
    for total in (2, 7, 50, 333, 5000):
        assert 1 <= auto_warmup(total, PRETRAIN_RULE) <= max(1, total // 10 + 1)


def test_auto_queue_warmup_is_zero_when_pretrained_and_positive_from_scratch():
    common = dict(loss="moco", queue_size=4096, global_batch=64)
    assert auto_queue_warmup(2000, pretrained=True, **common) == 0
    assert auto_queue_warmup(2000, pretrained=False, loss="clip", queue_size=4096, global_batch=64) == 0
    assert auto_queue_warmup(2000, pretrained=False, **common) == 100
    assert auto_queue_warmup(40_000, pretrained=False, **common) == 2000  # 5 % of a long run
    assert auto_queue_warmup(6, pretrained=False, **common) == 3  # never more than half the run
    # at least until the queue has been filled once
    assert auto_queue_warmup(2000, pretrained=False, loss="moco", queue_size=16384, global_batch=64) == 256


def test_build_plan_sources_and_explicit_values():
    rule = PRETRAIN_RULE
    assert build_plan(rule, batches_per_epoch=46).total == 2000
    plan = build_plan(rule, batches_per_epoch=46, steps=300, warmup=500, queue_warmup=7, loss="moco")
    assert (plan.total, plan.source, plan.warmup, plan.queue_warmup) == (300, "--steps", 299, 7)
    plan = build_plan(rule, batches_per_epoch=46, epochs=2, accum_steps=2)
    assert (plan.total, plan.source, plan.steps_per_epoch) == (46, "--epochs", 23)
    plan = build_plan(rule, batches_per_epoch=46, time_budget=60.0)
    assert plan.source == "--time-budget" and plan.total == 2000  # provisional until measured
    assert build_plan(rule, batches_per_epoch=46, queue_warmup=9, loss="clip").queue_warmup == 0


def test_pretrainer_plan_auto_queue_warmup_depends_on_pretrained(tmp_path, synth_dir, tiny_config):
    model_config = get_model_config("brivl-tiny")
    scratch = Pretrainer(tiny_config(tmp_path / "a", synth_dir, steps=None, batch_size=64, warmup=None, queue_warmup="auto"))
    plan = scratch.make_plan(46, model_config)
    assert (plan.total, plan.warmup, plan.queue_warmup, plan.source) == (2000, 200, 100, "data-size rule")
    pretrained = Pretrainer(tiny_config(tmp_path / "b", synth_dir, steps=None, batch_size=64, warmup=None, pretrained=True, queue_warmup="auto"))
    assert pretrained.make_plan(46, model_config).queue_warmup == 0


def test_train_config_queue_warmup_and_time_budget_options():
    cfg = TrainConfig()
    cfg.validate()
    assert cfg.queue_warmup == "auto" and cfg.warmup is None and cfg.time_budget is None
    cfg = TrainConfig(queue_warmup="100", time_budget="10m")
    cfg.validate()
    assert cfg.queue_warmup == 100
    with pytest.raises(UsageError, match="--queue-warmup"):
        TrainConfig(queue_warmup="soon").validate()
    with pytest.raises(UsageError, match="--queue-warmup"):
        TrainConfig(queue_warmup=-1).validate()
    with pytest.raises(UsageError, match="--time-budget or --steps"):
        TrainConfig(time_budget="10m", steps=100).validate()
    with pytest.raises(UsageError, match="--time-budget must be a duration"):
        TrainConfig(time_budget="ten minutes").validate()


@pytest.mark.parametrize(("text", "seconds"), [("600", 600.0), ("90s", 90.0), ("10m", 600.0), ("1.5h", 5400.0), (" 2M ", 120.0), (45, 45.0)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "10 minutes", "-5m", "0", "m", True])
def test_parse_duration_rejects_bad_values(text):
    with pytest.raises(UsageError, match="--time-budget"):
        parse_duration(text)


def _plan(**overrides):
    settings = dict(total=2000, warmup=200, queue_warmup=100, steps_per_epoch=46, source="data-size rule")
    settings.update(overrides)
    return TrainingPlan(**settings)


def test_a_good_plan_has_no_warnings():
    assert plan_warnings(_plan(), PRETRAIN_RULE, images=3000, queue_size=2048, global_batch=64) == []


def test_warning_run_too_short_for_its_data_names_the_option():
    (message,) = plan_warnings(_plan(total=46, warmup=5, source="--epochs"), PRETRAIN_RULE, images=3000)
    assert "46 steps is short for 3,000 training images" in message and "2,000" in message and "--steps/--epochs" in message
    (message,) = plan_warnings(_plan(total=300, warmup=30, source="--time-budget"), PRETRAIN_RULE, images=3000)
    assert "--time-budget" in message


def test_warning_warmup_too_long_for_the_run():
    (message,) = plan_warnings(_plan(total=2000, warmup=1000), PRETRAIN_RULE, images=3000, warmup_given=True)
    assert "50% of the 2,000-step run" in message and "--warmup" in message
    assert plan_warnings(_plan(total=2000, warmup=1000), PRETRAIN_RULE, images=3000, warmup_given=False) == []


def test_warning_queue_larger_than_the_data_suggests_a_size():
    (message,) = plan_warnings(_plan(), PRETRAIN_RULE, images=3000, queue_size=4096, global_batch=64)
    assert "queue (4,096 keys) is larger than the training set (3,000 images)" in message
    assert "--queue-size 2,944 or less" in message
    (message,) = plan_warnings(_plan(), PRETRAIN_RULE, images=40, queue_size=4096, global_batch=64)
    assert "--loss clip" in message


def test_warning_queue_warmup_covering_the_whole_run():
    (message,) = plan_warnings(_plan(queue_warmup=2000), PRETRAIN_RULE, images=20000, queue_size=4096, global_batch=64, queue_warmup_given=True)
    assert "--queue-warmup 2,000 covers the whole 2,000-step run" in message


def test_loss_watch_warns_once_on_a_flat_loss_and_not_on_a_falling_one():
    flat = LossWatch()
    messages = [flat.update(step, 8.3, 100) for step in range(1, 101)]
    warned = [m for m in messages if m]
    assert len(warned) == 1 and "has not moved after 25% of the run (step 25" in warned[0] and "--lr" in warned[0]
    falling = LossWatch()
    assert not any(falling.update(step, 8.3 - 0.05 * step, 100) for step in range(1, 101))
    # the in-batch losses of a queue warm-up (lower, another scale) are left out of the comparison
    after_warmup = LossWatch()
    losses = [4.1] * 20 + [8.3 - 0.1 * i for i in range(80)]
    assert not any(after_warmup.update(step, loss, 100, begin=20) for step, loss in enumerate(losses, 1))


def test_step_timer_and_time_budget_planning_with_injected_timings():
    timer = StepTimer(0, 100.0, skip=2, measure=10)
    # the first two steps are slow (3 s each), then 0.5 s per step
    clock = 100.0
    measured = None
    for step in range(1, 13):
        clock += 3.0 if step <= 2 else 0.5
        result = timer.observe(step, clock)
        if result is not None:
            measured = (step, result)
    assert measured == (12, pytest.approx(0.5))
    elapsed = clock - 100.0  # 11 s for 12 steps
    total = steps_in_budget(60.0, step=12, elapsed=elapsed, seconds_per_step=0.5)
    assert total == 12 + 98  # the remaining 49 s at 0.5 s/step
    assert steps_in_budget(5.0, step=12, elapsed=elapsed, seconds_per_step=0.5) == 13  # already over: one more step


class FakeClock:
    """One second passes each time the run reads the clock (once per step)."""

    def __init__(self, tick: float = 1.0) -> None:
        self.now, self.tick = 0.0, tick

    def __call__(self) -> float:
        value = self.now
        self.now += self.tick
        return value


def _trainer(cfg, clock=None):
    text = io.StringIO()
    trainer = Pretrainer(cfg, console=Console(file=text, width=300))
    trainer.speed_steps = (1, 3)  # time steps 2-4 (the run default: 3-12)
    if clock is not None:
        trainer.clock = clock
    return trainer, text


def test_pretrain_prints_the_plan_and_the_warnings(tmp_path, synth_dir, tiny_config):
    cfg = tiny_config(tmp_path / "run", synth_dir, steps=6, warmup=4, lr=1e-12, queue_size=128, queue_warmup=0, log_every=3)
    trainer, text = _trainer(cfg)
    trainer.run()
    output = text.getvalue()
    assert "Plan: 6 steps (1.0 epochs, from --steps), lr warm-up 4 steps, no queue warm-up." in output
    joined = "\n".join(trainer.warnings)
    assert "6 steps is short for 96 training images" in joined
    assert "warm-up (4 steps) is 67% of the 6-step run" in joined
    assert "queue (128 keys) is larger than the training set (96 images)" in joined
    assert "the loss has not moved after 25% of the run (step 2" in joined  # lr 1e-12: nothing moves
    assert "Speed:" in output  # the estimate from the first steps' speed
    assert len(trainer.warnings) == 4


def test_auto_queue_warmup_in_a_run_from_scratch(tmp_path, synth_dir, tiny_config):
    trainer, text = _trainer(tiny_config(tmp_path / "run", synth_dir, steps=4, log_every=2, queue_warmup="auto"))
    trainer.run()
    assert trainer.plan.queue_warmup == 2  # half of the 4-step run
    assert "queue warm-up 2 steps" in text.getvalue()


def test_time_budget_plans_the_run_to_end_on_time_and_a_resume_keeps_the_plan(tmp_path, synth_dir, tiny_config):
    out = tmp_path / "run"
    cfg = tiny_config(out, synth_dir, steps=None, warmup=None, time_budget="8s", save_every=6, keep=5, log_every=1, queue_warmup="auto")
    trainer, text = _trainer(cfg, FakeClock(1.0))
    result = trainer.run()
    # clock reads: 0 at the start, step k ends at k; steps 2-4 take 3 s -> 1 s/step; at step 4
    # the elapsed reading is 5 s, so 3 more steps fit in the 8 s.
    assert trainer.plan.source == "--time-budget" and trainer.plan.seconds_per_step == pytest.approx(1.0)
    assert result.step == trainer.plan.total == 7
    assert trainer.plan.warmup == auto_warmup(7, PRETRAIN_RULE) == 1
    assert "Plan: --time-budget 8 s; the number of steps follows" in text.getvalue()
    assert "Time budget: 1.000 s/step" in text.getvalue() and "Plan: 7 steps" in text.getvalue()
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    lrs = [line["lr"] for line in lines if "lr" in line]
    assert lrs[-1] == pytest.approx(cfg.lr * 0.01)  # the cosine decay reached its floor on the last step

    # Resume from step 6 with a clock ten times faster: the saved plan holds, nothing is re-measured.
    resumed_cfg = tiny_config(out, synth_dir, steps=None, warmup=None, time_budget="8s", resume=str(out / ("step-%08d" % 6)), log_every=1)
    resumed, _ = _trainer(resumed_cfg, FakeClock(0.1))
    again = resumed.run()
    assert again.step == 7 and resumed.plan.total == 7 and resumed.plan.seconds_per_step == pytest.approx(1.0)
