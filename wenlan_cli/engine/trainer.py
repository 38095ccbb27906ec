"""The training loop every trainer shares: build -> fit -> finish over one `RunState`.

A trainer (pretraining's `Pretrainer`, a task plugin's fine-tuner) subclasses `Trainer`
and writes only what is its own: `build` (data, model, optimizer: it ends by giving the
run state its optimizer and plan), `batches` and `train_step` (one optimizer step),
`evaluate`, `checkpoint_contents` and `finish`. The skeleton owns the rest, so every
trainer logs, plans, stops and resumes the same way: the step loop and the learning-rate
schedule, metrics.jsonl lines mirrored to TensorBoard, the progress bar, the speed
measurement and the time budget, the stuck-loss warning, evaluation and checkpoint
cadence with pruning, stops (signals, --max-time, the NaN/inf guard: engine/stops.py)
and resume. Everything a resume needs besides the model lives in `RunState` and is saved
and restored as one unit (`state_dict` / `load_state_dict`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import torch

from .. import strict_json
from ..errors import TrainingError, UsageError
from .budget import LossWatch, StepTimer, TrainingPlan, estimate_line, steps_in_budget
from .checkpoint import (
    CheckpointContents,
    latest_checkpoint,
    load_training_state,
    prune_checkpoints,
    resolve_checkpoint,
    step_name,
    write_checkpoint,
)
from .distributed import DistContext, all_reduce_max_flag, all_reduce_mean, barrier
from .progress import TrainingProgress
from .rng import restore_rng_state, rng_state
from .schedule import warmup_cosine
from .stops import StopRequest, non_finite_state, requested_stop

__all__ = ["RateWindow", "RunState", "Trainer"]


class RateWindow:
    """Items trained since the last logged step, for the logged rate (pairs/s, captions/s)."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.items = 0

    def add(self, items: int) -> None:
        self.items += items

    def rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.items / elapsed if elapsed > 0 else 0.0

    def reset(self) -> None:
        self.start, self.items = time.monotonic(), 0


@dataclass
class RunState:
    """What a run carries from step to step. `state_dict` is what a checkpoint's
    training_state.pt holds of it (besides the trainer's own entries: the model's
    buffers, the config); `load_state_dict` puts it back."""

    step: int = 0
    skipped_images: int = 0
    plan: TrainingPlan | None = None
    optimizer: torch.optim.Optimizer | None = None
    scheduler: torch.optim.lr_scheduler.LambdaLR | None = None
    # Loader batches per optimizer step (gradient accumulation): the data position is step x this.
    batches_per_step: int = 1
    resumed: bool = False
    started: float = 0.0  # time.monotonic() when the loop began: --max-time and the logged "time"
    timer: StepTimer | None = None
    watch: LossWatch | None = None
    window: RateWindow = field(default_factory=RateWindow)

    def schedule(self, optimizer: torch.optim.Optimizer, plan: TrainingPlan) -> None:
        """Train with `optimizer` along `plan`: warm-up then cosine decay. The schedule reads
        the plan at every step, so a time budget can replace it after measuring the speed."""
        self.optimizer, self.plan = optimizer, plan
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, self.plan.warmup, self.plan.total))

    @property
    def data_position(self) -> int:
        """Loader batches consumed so far (where a resumed loader starts)."""
        return self.step * self.batches_per_step

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def start_clock(self, clock, speed_steps: tuple[int, int], hint: str) -> None:
        """Start the loop's clocks: `clock` times the speed (tests drive it), wall time the rest."""
        self.started = time.monotonic()
        self.timer = StepTimer(self.step, clock(), skip=speed_steps[0], measure=speed_steps[1])
        self.watch = LossWatch(hint=hint)

    def state_dict(self) -> dict:
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "rng": rng_state(),
            "skipped_images": self.skipped_images,
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }

    def load_state_dict(self, saved: dict, *, keep_plan: bool) -> None:
        """Continue from `saved`; `keep_plan`: the saved plan replaces the one built from
        this run's options (a resume that does not set the run's length anew)."""
        self.optimizer.load_state_dict(saved["optimizer"])
        self.scheduler.load_state_dict(saved["scheduler"])
        restore_rng_state(saved["rng"])
        self.skipped_images = int(saved.get("skipped_images", 0))
        self.step = int(saved["step"])
        self.resumed = True
        if keep_plan and saved.get("plan"):
            self.plan = TrainingPlan.from_dict(saved["plan"])


class Trainer:
    """build -> fit -> finish; see the module. `cfg` needs `out`, `log_every`, `max_time`
    (and `eval_every`, unless the subclass overrides `eval_every()`); the rest is the subclass's."""

    label = "train"  # the progress bar's name
    unit = "items/s"  # what the logged rate counts, on the bar
    rate_key = "items_per_s"  # ... and in metrics.jsonl
    loss_hint = "try another --lr"  # the stuck-loss warning's advice
    soft_wrap = False  # log lines are not wrapped at the console width

    def __init__(self, cfg, console=None, ctx: DistContext | None = None) -> None:
        from rich.console import Console

        self.cfg = cfg
        self.ctx = ctx or DistContext()
        self.console = console or Console(stderr=True)
        self.out = Path(cfg.out)
        self.state = RunState()
        self.model: torch.nn.Module | None = None  # what the NaN guard checks (the unwrapped model)
        self.batches_per_epoch = 0  # what a time budget re-plans with
        self.metrics_lines: list[str] = []
        self.metrics_writer = None
        self.warnings: list[str] = []
        # The clock of the time budget and the speed estimate (tests drive it by hand).
        self.clock = time.monotonic
        # Steps skipped, then steps timed, to measure the speed (fewer in tests).
        self.speed_steps = (2, 10)

    @property
    def plan(self) -> TrainingPlan | None:
        return self.state.plan

    # Hooks ------------------------------------------------------------------------
    def build(self) -> None:
        """Data, model, optimizer; ends with `self.state.schedule(optimizer, plan)`."""
        raise NotImplementedError

    def batches(self) -> Iterator:
        """The endless batches `train_step` draws from (opened when the loop starts)."""
        raise NotImplementedError

    def train_step(self, batches: Iterator) -> tuple[float, int]:
        """One optimizer step on the next batch(es): (the step's loss, items trained)."""
        raise NotImplementedError

    def evaluate(self, step: int) -> dict | None:
        return None

    def checkpoint_contents(self, final_metrics: dict | None = None) -> CheckpointContents:
        raise NotImplementedError

    def finish(self, stopped: str | None):
        """After the loop (`stopped`: why it ended early, else None); the run's result."""
        raise NotImplementedError

    def make_plan(self, batches_per_epoch: int, *, total: int | None = None, seconds_per_step: float | None = None) -> TrainingPlan:
        raise NotImplementedError

    def plan_description(self) -> str:
        return self.plan.describe(queue=False)

    def plan_warnings(self) -> list[str]:
        return []

    def eval_every(self) -> int:
        return self.cfg.eval_every or 0

    def save_every(self) -> int:
        return 0

    def keep_checkpoints(self) -> int:
        """How many step checkpoints pruning keeps (0: all)."""
        return 0

    def non_finite_message(self, problem: str, step: int) -> str:
        """Why the run stopped; names the newest checkpoint on disk (checkpoints are written
        only when every value is finite) without calling the stopped state anything else."""
        last = latest_checkpoint(self.out)
        if last is None:
            return f"{problem} at step {step}; training stopped and no checkpoint had been written yet."
        return (
            f"{problem} at step {step}; training stopped. The newest checkpoint, {last}, was written "
            "before and holds only finite values."
        )

    # The run ----------------------------------------------------------------------
    def run(self):
        from .metrics import MetricsWriter
        from .run_dir import discard_failed_start

        with discard_failed_start(self.out, enabled=self.ctx.is_main):
            if self.ctx.is_main:
                self.metrics_writer = MetricsWriter(self.out)
            try:
                self.build()
                return self.finish(self.fit())
            finally:
                if self.metrics_writer is not None:
                    self.metrics_writer.close()

    def fit(self) -> str | None:
        """Train until the plan's end or a stop; returns the stop's reason, else None."""
        state = self.state
        state.start_clock(self.clock, self.speed_steps, self.loss_hint)
        with StopRequest() as stop, self.progress() as progress:
            batches = self.batches()
            state.window.reset()
            while state.step < self.plan.total:
                loss, items = self.train_step(batches)
                state.scheduler.step()
                state.step += 1
                state.window.add(items * self.ctx.world_size)
                self.check_finite(loss)
                self.observe(loss)
                progress.set_total(self.plan.total)
                self.log_step(loss, progress)
                self.evaluate_and_save()
                stopped = self.requested_stop(stop)
                if stopped is not None:
                    return stopped
        return None

    def progress(self) -> TrainingProgress:
        return TrainingProgress(
            self.plan.total, self.console, start=self.state.step, enabled=self.ctx.is_main, label=self.label, unit=self.unit
        )

    # Each step --------------------------------------------------------------------
    def check_finite(self, loss: float) -> None:
        """The NaN/inf guard: the loss and learning rate every step, the parameters too at
        logged and saved steps and the last; every process stops at the same step."""
        step, save_every = self.state.step, self.save_every()
        checked = save_every and step % save_every == 0 or step % self.cfg.log_every == 0 or step == self.plan.total
        problem = non_finite_state(loss, self.state.lr, self.model if checked else None)
        if all_reduce_max_flag(problem is not None, self.ctx, self.ctx.device):
            raise TrainingError(self.non_finite_message(problem or "another process found a NaN or infinity", step))

    def observe(self, loss: float) -> None:
        """The speed estimate (and with a time budget, the plan from it), then the
        stuck-loss watch (not on a resumed run: its first losses are not the run's)."""
        state = self.state
        seconds_per_step = state.timer.observe(state.step, self.clock())
        if seconds_per_step is not None:
            self.use_measured_speed(seconds_per_step)
        if not state.resumed:
            message = state.watch.update(state.step, loss, self.plan.total, begin=self.plan.queue_warmup)
            if message:
                self.warn(message)

    def use_measured_speed(self, seconds_per_step: float) -> None:
        """Once the first steps are timed: with --time-budget, re-plan the run from the speed;
        log the time the run will take."""
        # Every process plans with the same (averaged) figures, so all stop at the same step.
        ctx, state = self.ctx, self.state
        seconds_per_step = all_reduce_mean(seconds_per_step, ctx, ctx.device)
        elapsed = all_reduce_mean(self.clock() - state.timer.start_time, ctx, ctx.device)
        if self.plan.source == "--time-budget" and self.plan.seconds_per_step is None:
            total = steps_in_budget(self.plan.time_budget, step=state.step, elapsed=elapsed, seconds_per_step=seconds_per_step)
            state.plan = self.make_plan(self.batches_per_epoch, total=total, seconds_per_step=seconds_per_step)
            self.log(f"Time budget: {seconds_per_step:.3f} s/step measured over the first steps.")
            self.announce_plan()
        self.log(estimate_line(self.plan, state.step, seconds_per_step))

    def log_step(self, loss: float, progress: TrainingProgress) -> None:
        state = self.state
        if state.step % self.cfg.log_every and state.step != self.plan.total:
            return
        rate, lr = state.window.rate(), state.lr
        self.record({
            "step": state.step, "loss": round(loss, 6), "lr": lr, self.rate_key: round(rate, 2),
            "skipped_images": state.skipped_images, "time": round(time.monotonic() - state.started, 2),
        })  # fmt: skip
        state.window.reset()
        progress.update(state.step, loss, lr, rate)

    def evaluate_and_save(self) -> None:
        """Evaluation and checkpoint cadence (the last step's are `finish`'s); the logged
        rate counts training only."""
        step, total = self.state.step, self.plan.total
        every = self.eval_every()
        if every and step % every == 0 and step < total:
            self.evaluate(step)
            self.state.window.reset()
        every = self.save_every()
        if every and step % every == 0 and step < total and self.ctx.is_main:
            self.save_checkpoint(step_name(step))

    def requested_stop(self, stop: StopRequest) -> str | None:
        """A signal or --max-time on any process stops every process at this step."""
        reason = requested_stop(stop, self.state.started, self.cfg.max_time)
        if self.state.step < self.plan.total and all_reduce_max_flag(reason is not None, self.ctx, self.ctx.device):
            return reason or "max-time"
        return None

    # Output -----------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.ctx.is_main:
            self.console.print(message, soft_wrap=self.soft_wrap)

    def warn(self, message: str) -> None:
        """Print a warning once."""
        if message not in self.warnings:
            self.warnings.append(message)
            self.log(f"[yellow]warning:[/yellow] {message}")

    def announce_plan(self) -> None:
        self.log(self.plan_description())
        for message in self.plan_warnings():
            if self.plan.source == "--time-budget" and self.plan.seconds_per_step is None and "is short for" in message:
                continue  # the provisional plan: judged once the speed is measured
            self.warn(message)

    def record(self, entry: dict) -> None:
        """One metrics.jsonl line (strict JSON: non-finite values become null), mirrored to
        TensorBoard; kept for the checkpoints' own copy."""
        if not self.ctx.is_main:
            return
        line = strict_json.dumps(entry, ensure_ascii=False) + "\n"
        self.metrics_lines.append(line)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)
        if self.metrics_writer is not None:
            self.metrics_writer.write(entry)

    # Checkpoints and resume -------------------------------------------------------
    def save_checkpoint(self, name: str, final_metrics: dict | None = None) -> Path:
        path = write_checkpoint(self.out / name, self.checkpoint_contents(final_metrics))
        prune_checkpoints(self.out, self.keep_checkpoints())
        return path

    def save_on_stop(self, reason: str) -> Path | None:
        """A stopped run's checkpoint, to continue from with --resume."""
        step = self.state.step
        path = self.save_checkpoint(step_name(step)) if self.ctx.is_main else None
        barrier(self.ctx)
        self.log(f"Stopped ({reason}) at step {step}; checkpoint {path}. Continue with --resume auto --out {self.out}.")
        return path

    def find_resume(self, resume: str | None) -> Path | None:
        """The checkpoint a --resume value names: "auto" (this run directory's newest, or
        None), a checkpoint, or a run directory (its final, else newest, checkpoint)."""
        if not resume:
            return None
        if resume == "auto":
            return latest_checkpoint(self.out)
        path = Path(resume)
        return resolve_checkpoint(path) if not (path / "training_state.pt").is_file() else path

    def load_model_state(self, directory: Path, saved: dict) -> None:
        """Put the checkpoint's weights into the model (the subclass's format)."""
        raise NotImplementedError

    def resume(self, directory: Path, *, keep_plan: bool) -> None:
        """Continue the run saved in `directory`: model, run state, metrics so far."""
        saved = load_training_state(directory)
        self.load_model_state(directory, saved)
        self.state.load_state_dict(saved, keep_plan=keep_plan)
        if self.ctx.is_main:
            metrics_file = directory / "metrics.jsonl"
            self.metrics_lines = metrics_file.read_text(encoding="utf-8").splitlines(keepends=True) if metrics_file.exists() else []
            (self.out / "metrics.jsonl").write_text("".join(self.metrics_lines), encoding="utf-8")
        if self.metrics_writer is not None:
            self.metrics_writer.purge_step = self.state.step + 1
        if self.state.step >= self.plan.total:
            raise UsageError(
                f"the checkpoint {directory} is at step {self.state.step}, the end of a {self.plan.total}-step run; "
                f"give --steps above {self.state.step} to train further."
            )
        self.log(f"Resumed from {directory} at step {self.state.step}.")
