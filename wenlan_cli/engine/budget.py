"""How long a run trains when the user does not say: the data-size rule, the warm-ups,
the wall-clock budget, the plan printed at the start and the warnings about a bad one.

Why a rule at all: one epoch is a sensible default only on large data. On 3,000 images at
batch 64 it is 47 steps, far too few for towers trained from scratch (mean recall 2.5),
while 1,700 steps reach 98.9 on the same data. So small sets get a minimum number of
optimizer steps, large ones a number of epochs, and no run exceeds a cap. Nothing here
looks at the dataset's name.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

__all__ = [
    "BudgetRule",
    "PRETRAIN_RULE",
    "CAPTION_RULE",
    "TrainingPlan",
    "LossWatch",
    "StepTimer",
    "auto_queue_warmup",
    "budget_steps",
    "plan_warnings",
    "auto_warmup",
    "build_plan",
    "steps_in_budget",
    "estimate_line",
]


@dataclass(frozen=True)
class BudgetRule:
    """steps = min(max_steps, max(min_steps, ceil(epochs x batches per epoch))); the
    learning-rate warm-up is warmup_fraction of that, at most warmup_cap steps."""

    min_steps: int
    epochs: float
    max_steps: int
    warmup_fraction: float
    warmup_cap: int

    def describe(self) -> str:
        return (
            f"max({self.min_steps:,} steps, {self.epochs:g} epochs), at most {self.max_steps:,} steps; "
            f"warm-up {self.warmup_fraction:.0%} of the run, at most {self.warmup_cap:,} steps"
        )


# Measured on 2 CPU cores with brivl-tiny at batch 64: 3,000 AIC-ICC-layout images need about
# 1,700 steps to reach mean recall ~99 (47 steps, one epoch, gave 2.5); the built-in 10,000
# images reach 94 after 2,000 steps. Above 12,800 images (200 batches) ten epochs take over.
PRETRAIN_RULE = BudgetRule(min_steps=2000, epochs=10, max_steps=100_000, warmup_fraction=0.1, warmup_cap=2000)
# The captioner on the built-in data: CIDEr passes 150 early but shapes keep improving up to
# 2,400 steps (plugins/wenlan-aic-icc/README.md); its warm-up of 100 steps is 1/24 of that.
CAPTION_RULE = BudgetRule(min_steps=2400, epochs=10, max_steps=100_000, warmup_fraction=1 / 24, warmup_cap=2000)

# In-batch steps of the queue warm-up on towers from scratch: benchmark 3 in
# benchmarks/README.md found ~100 steps enough to leave the collapsed start.
QUEUE_WARMUP_MIN = 100
QUEUE_WARMUP_FRACTION = 0.05
# A run shorter than this share of the rule's budget is reported as too short for its data.
SHORT_RUN_SHARE = 0.5
# A warm-up longer than this share of the run is reported.
LONG_WARMUP_SHARE = 0.25


def budget_steps(steps_per_epoch: int, rule: BudgetRule) -> int:
    """Optimizer steps of a run given neither --steps nor --epochs (see BudgetRule)."""
    by_epochs = math.ceil(rule.epochs * max(1, steps_per_epoch))
    return max(1, min(rule.max_steps, max(rule.min_steps, by_epochs)))


def auto_warmup(total: int, rule: BudgetRule) -> int:
    """Learning-rate warm-up steps for a run of `total` steps: a fixed share, capped."""
    return max(1, min(rule.warmup_cap, round(rule.warmup_fraction * total), total - 1)) if total > 1 else 0


def auto_queue_warmup(total: int, *, pretrained: bool, loss: str, queue_size: int, global_batch: int) -> int:
    """In-batch steps before the queue loss (`--queue-warmup auto`).

    Pretrained towers (BriVL's setting) need none. Towers from scratch start collapsed and
    the queue loss keeps them there, so they take the in-batch loss at least until the
    queue has been filled once and for at least QUEUE_WARMUP_MIN steps (5 % of long runs),
    never more than half the run."""
    if pretrained or loss != "moco":
        return 0
    fill = math.ceil(queue_size / max(1, global_batch))
    wanted = max(QUEUE_WARMUP_MIN, fill, math.ceil(QUEUE_WARMUP_FRACTION * total))
    return min(wanted, total // 2)


@dataclass
class TrainingPlan:
    """What a run will do, decided before its first step and saved with its checkpoints."""

    total: int
    warmup: int
    queue_warmup: int
    # Optimizer steps per pass over the training images.
    steps_per_epoch: int
    # Where `total` comes from: "--steps", "--epochs", "data-size rule" or "--time-budget".
    source: str
    time_budget: float | None = None
    seconds_per_step: float | None = None

    @property
    def epochs(self) -> float:
        return self.total / max(1, self.steps_per_epoch)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainingPlan":
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)

    def describe(self, *, queue: bool = True) -> str:
        if self.source == "--time-budget" and self.seconds_per_step is None:
            return (
                f"Plan: --time-budget {format_seconds(self.time_budget or 0)}; the number of steps follows from the speed "
                "of the first steps (the warm-ups too)."
            )
        parts = [f"{self.total:,} steps ({self.epochs:.1f} epochs, from {self.source})", f"lr warm-up {self.warmup:,} steps"]
        if queue:
            parts.append(f"queue warm-up {self.queue_warmup:,} steps" if self.queue_warmup else "no queue warm-up")
        if self.time_budget is not None:
            parts.append(f"time budget {format_seconds(self.time_budget)}")
        return "Plan: " + ", ".join(parts) + "."


def format_seconds(seconds: float) -> str:
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def plan_warnings(
    plan: TrainingPlan,
    rule: BudgetRule,
    *,
    images: int,
    queue_size: int | None = None,
    global_batch: int = 1,
    warmup_given: bool = False,
    queue_warmup_given: bool = False,
) -> list[str]:
    """Sentences about a plan that will likely train badly, each naming the option to change.

    `queue_size` is None for a loss without queues."""
    warnings = []
    recommended = budget_steps(plan.steps_per_epoch, rule)
    if plan.source != "data-size rule" and plan.total < SHORT_RUN_SHARE * recommended:
        option = "--time-budget" if plan.source == "--time-budget" else "--steps/--epochs"
        warnings.append(
            f"{plan.total:,} steps is short for {images:,} training images (the data-size rule gives "
            f"{recommended:,}); raise {option} or leave it out."
        )
    if warmup_given and plan.total > 0 and plan.warmup > LONG_WARMUP_SHARE * plan.total:
        warnings.append(
            f"the learning-rate warm-up ({plan.warmup:,} steps) is {plan.warmup / plan.total:.0%} of the "
            f"{plan.total:,}-step run, so the peak rate comes late; lower --warmup or leave it out."
        )
    if queue_size is not None and queue_size > images:
        fit = (images // max(1, global_batch)) * global_batch
        hint = f"--queue-size {fit:,} or less" if fit >= global_batch else "--loss clip"
        warnings.append(
            f"the queue ({queue_size:,} keys) is larger than the training set ({images:,} images), so images "
            f"come back as their own negatives; use {hint}."
        )
    if queue_size is not None and queue_warmup_given and plan.queue_warmup >= plan.total:
        warnings.append(
            f"--queue-warmup {plan.queue_warmup:,} covers the whole {plan.total:,}-step run, so the queue loss "
            "never starts; lower --queue-warmup or use --loss clip."
        )
    return warnings


class LossWatch:
    """Notices a loss that has not moved once `fraction` of the run is done: the mean of
    the last few losses must be at least `min_drop` (relative) below the first few's.

    The run's total comes with each loss (a time budget may change it), and so does
    `begin`: losses up to that step are ignored, as the queue warm-up's in-batch loss is
    on another scale than the queue loss that follows it."""

    def __init__(self, *, fraction: float = 0.25, window: int = 5, min_drop: float = 0.05, hint: str = "try another --lr") -> None:
        self.hint = hint
        self.fraction = fraction
        self.window = window
        self.min_drop = min_drop
        self.first: list[float] = []
        self.recent: list[float] = []
        self.done = False

    def update(self, step: int, loss: float, total: int, begin: int = 0) -> str | None:
        """Feed the loss of `step` (1-based); returns a warning once, when the loss is stuck."""
        window = max(1, min(self.window, (total - begin) // 8))
        check_at = max(begin + 2 * window, math.ceil(self.fraction * total))
        if self.done or step <= begin or not math.isfinite(loss) or check_at > total:
            return None
        if len(self.first) < window:
            self.first.append(loss)
        self.recent = (self.recent + [loss])[-window:]
        if step < check_at:
            return None
        self.done = True
        before = sum(self.first) / len(self.first)
        now = sum(self.recent) / len(self.recent)
        if before - now >= self.min_drop * abs(before):
            return None
        return (
            f"the loss has not moved after {self.fraction:.0%} of the run (step {step:,}: {now:.4f}, at the start "
            f"{before:.4f}); {self.hint}."
        )


class StepTimer:
    """Seconds per step, measured over `measure` steps after `skip` slow first ones.

    `observe(step, now)` is called after each step with the step count and a clock
    reading (the clock is injected so tests can drive it); it returns the measured
    seconds per step exactly once, when the measurement is complete."""

    def __init__(self, start_step: int, start_time: float, *, skip: int = 2, measure: int = 10) -> None:
        self.begin_step = start_step + skip
        self.end_step = self.begin_step + measure
        self.start_time = start_time
        self.begin_time: float | None = start_time if skip == 0 else None
        self.seconds_per_step: float | None = None

    def observe(self, step: int, now: float) -> float | None:
        if self.seconds_per_step is not None:
            return None
        if step == self.begin_step:
            self.begin_time = now
        if step >= self.end_step and self.begin_time is not None:
            self.seconds_per_step = max(1e-9, (now - self.begin_time) / (step - self.begin_step))
            return self.seconds_per_step
        return None


def steps_in_budget(budget: float, *, step: int, elapsed: float, seconds_per_step: float) -> int:
    """The total steps of a run that must end `budget` seconds after its first step, when
    `step` steps took `elapsed` seconds and the rest go at `seconds_per_step`."""
    remaining = max(0.0, budget - elapsed)
    return max(step + 1, step + int(remaining / seconds_per_step))


def build_plan(
    rule: BudgetRule,
    *,
    batches_per_epoch: int,
    steps: int | None = None,
    epochs: float | None = None,
    accum_steps: int = 1,
    warmup: int | None = None,
    queue_warmup: int | str = 0,
    pretrained: bool = False,
    loss: str = "clip",
    queue_size: int = 0,
    global_batch: int = 1,
    time_budget: float | None = None,
    total: int | None = None,
    seconds_per_step: float | None = None,
) -> TrainingPlan:
    """The plan of a run from its options: `warmup` None and `queue_warmup` "auto" follow
    the rules above; `total`, when given, is a total already decided (by the time budget)."""
    by_rule = budget_steps(max(1, batches_per_epoch // accum_steps), rule)
    if steps is not None:
        source, decided = "--steps", steps
    elif epochs is not None:
        source, decided = "--epochs", max(1, math.ceil(epochs * batches_per_epoch / accum_steps))
    elif time_budget is not None:
        source, decided = "--time-budget", by_rule  # until the step speed is measured
    else:
        source, decided = "data-size rule", by_rule
    total = decided if total is None else total
    lr_warmup = auto_warmup(total, rule) if warmup is None else min(warmup, max(0, total - 1))
    if queue_warmup == "auto":
        in_batch = auto_queue_warmup(total, pretrained=pretrained, loss=loss, queue_size=queue_size, global_batch=global_batch)
    else:
        in_batch = int(queue_warmup) if loss == "moco" else 0
    return TrainingPlan(
        total=total, warmup=lr_warmup, queue_warmup=in_batch, steps_per_epoch=max(1, batches_per_epoch // accum_steps), source=source,
        time_budget=time_budget, seconds_per_step=seconds_per_step,
    )


def estimate_line(plan: TrainingPlan, step: int, seconds_per_step: float) -> str:
    left = (plan.total - step) * seconds_per_step
    finish = time.strftime("%H:%M", time.localtime(time.time() + left))
    return (
        f"Speed: {seconds_per_step:.3f} s/step over the first steps; about {format_seconds(plan.total * seconds_per_step)} "
        f"for {plan.total:,} steps, ending about {finish} (evaluation not included)."
    )
