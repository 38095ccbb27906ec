"""finetune-caption's defaults come from the data size, it prints its plan, and a time
budget sets the number of steps from the first steps' speed."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from wenlan_aic_icc.finetune import CaptionFinetuner, FinetuneConfig
from wenlan_cli.errors import UsageError
from wenlan_cli.engine.budget import CAPTION_RULE, auto_warmup

TINY = dict(batch_size=8, eval_every=0, freeze_tower=True, meteor=False, d_model=32, layers=1, heads=2, ff_dim=64, max_len=8, log_every=1)


class FakeClock:
    """One second passes each time the run reads the clock (once per step)."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        value = self.now
        self.now += 1.0
        return value


def test_default_plan_follows_the_data_size_rule_not_the_dataset_name():
    for dataset in ("synth", "aic-icc"):
        tuner = CaptionFinetuner(FinetuneConfig(checkpoint="x", dataset=dataset))
        plan = tuner.make_plan(46)
        assert (plan.total, plan.warmup, plan.source) == (2400, 100, "data-size rule")
    assert CaptionFinetuner(FinetuneConfig(checkpoint="x")).make_plan(1000).total == 10000


def test_time_budget_is_exclusive_with_steps():
    with pytest.raises(UsageError, match="--time-budget or --steps"):
        FinetuneConfig(checkpoint="x", steps=5, time_budget="1m").validate()
    with pytest.raises(UsageError, match="--time-budget must be a duration"):
        FinetuneConfig(checkpoint="x", time_budget="soon").validate()


def test_time_budget_plans_the_captioner_run(tmp_path, cap_data, pretrain_checkpoint):
    cfg = FinetuneConfig(checkpoint=str(pretrain_checkpoint), data_dir=str(cap_data), out=str(tmp_path), time_budget="15s", **TINY)
    text = io.StringIO()
    tuner = CaptionFinetuner(cfg, console=Console(file=text, width=300))
    tuner.clock = FakeClock()
    result = tuner.run()
    # 1 s/step measured over steps 3-12; at step 12 the elapsed reading is 13 s: 2 more steps.
    assert result.step == tuner.plan.total == 14 and tuner.plan.source == "--time-budget"
    assert tuner.plan.warmup == auto_warmup(14, CAPTION_RULE)
    output = text.getvalue()
    assert "Plan: --time-budget 15 s; the number of steps follows from the speed" in output
    assert "Plan: 14 steps (2.3 epochs, from --time-budget), lr warm-up 1 steps, time budget 15 s." in output
    assert "Speed: 1.000 s/step" in output
    assert any("14 steps is short for 48 training images" in w and "--time-budget" in w for w in tuner.warnings)
