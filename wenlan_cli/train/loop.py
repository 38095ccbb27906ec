"""`wenlan pretrain`'s engine: data, model, optimiser, the step, evaluation, checkpoints.

One process or many (torchrun): every rank runs the same steps on its slice of each
global batch; rank 0 alone logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from .. import strict_json
from ..config import ModelConfig, TrainConfig
from ..data.pipeline import CaptionTokens, ImageSettings, PairCollator, PairDataset, PairSampler, normalize_images
from ..data.records import ImageTextRecord
from ..data.sources import STREAM_DATASET, load_records
from ..data.memory import release_freed_memory
from ..data.table import caption_counts as count_captions, joined_captions
from ..engine.device import autocast_context
from ..errors import DataError, TrainingError, UsageError
from ..eval.evaluate import evaluate_retrieval
from ..models.normalization import resolve_image_normalization
from ..models.registry import create_model, get_model_config
from ..models.tokenizer import count_chars_joined, load_pretrained_tokenizer, load_tokenizer, tokenizer_from_vocab, vocab_from_counts
from ..engine.checkpoint import (
    CheckpointContents,
    latest_checkpoint,
    load_query_state,
    load_training_state,
    prune_checkpoints,
    read_checkpoint_info,
    resolve_checkpoint,
    step_name,
    write_checkpoint,
)
from ..engine.distributed import (
    DistContext,
    KeyBatchShuffle,
    all_gather_variable,
    all_reduce_max_flag,
    all_reduce_mean,
    barrier,
    init_distributed,
)
from ..engine.optim import adamw
from ..engine.progress import TrainingProgress
from ..engine.budget import PRETRAIN_RULE, LossWatch, StepTimer, TrainingPlan, build_plan, estimate_line, plan_warnings, steps_in_budget
from ..engine.rng import restore_rng_state, rng_state, seed_everything
from ..engine.schedule import warmup_cosine


@dataclass
class RunResult:
    out: Path
    step: int
    metrics: dict | None
    checkpoint: Path | None
    stopped_early: str | None = None


def apply_overrides(model_config: ModelConfig, cfg: TrainConfig) -> ModelConfig:
    """The model config with the run's --queue-size / --loss / ... applied and its image
    mean/std settled (the backbone's own from timm, or the config's, checked)."""
    mc = dataclasses.replace(model_config, image=dataclasses.replace(model_config.image), text=dataclasses.replace(model_config.text))
    for name in ("queue_size", "momentum", "temperature", "loss", "mask_false_negatives"):
        value = getattr(cfg, name)
        if value is not None:
            setattr(mc, name, value)
    if cfg.image_weights:
        mc.image.pretrained_source = cfg.image_weights
    if cfg.text_weights:
        mc.text.hf_name = cfg.text_weights
    if cfg.trust_remote_code:
        mc.text.trust_remote_code = True
    mc = resolve_image_normalization(mc, pretrained=cfg.pretrained, keep_config=cfg.image_norm_from_config)
    mc.validate()
    return mc


def default_workers() -> int:
    cores = os.cpu_count() or 1
    return 0 if cores <= 2 else min(8, cores // 2)


class StopRequest:
    """SIGINT / SIGTERM set a flag; the loop checkpoints at the next step boundary.
    A second SIGINT interrupts at once."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        return False


class Pretrainer:
    def __init__(self, cfg: TrainConfig, console=None, ctx: DistContext | None = None, explicit: set[str] | None = None) -> None:
        cfg.validate()
        self.cfg = cfg
        # The options given for this run (None: all); a resume takes the others from its checkpoint.
        self.explicit = explicit
        self.ctx = ctx or init_distributed(cfg.device)
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.out = Path(cfg.out)
        self.metrics_lines: list[str] = []
        self.skipped_images = 0
        self.metrics_writer = None
        # The clock of the time budget and the speed estimate (tests drive it by hand).
        self.clock = time.monotonic
        # Steps skipped, then steps timed, to measure the speed (fewer in tests).
        self.speed_steps = (2, 10)
        self.plan: TrainingPlan | None = None
        self.restored_plan: dict | None = None
        self.warnings: list[str] = []
        self.shard_data = None  # --dataset webdataset: the streamed training split

    # Set-up -----------------------------------------------------------------------
    def log(self, message: str) -> None:
        if self.ctx.is_main:
            self.console.print(message)

    def load_data(self) -> tuple[list[ImageTextRecord], list[ImageTextRecord]]:
        cfg = self.cfg
        options = {}
        if cfg.image_column:
            options["image_column"] = cfg.image_column
        if cfg.text_column:
            options["text_column"] = cfg.text_column
        synth = dict(train=cfg.synth_train, val=cfg.synth_val, test=cfg.synth_test, seed=cfg.synth_seed)
        if cfg.dataset == "synth" and cfg.data_dir is None and self.ctx.is_main:
            self.log("[dim]Preparing the synthetic dataset (generated once, then cached)...[/dim]")
        if self.ctx.distributed and cfg.dataset == "synth" and cfg.data_dir is None:
            # Rank 0 generates the cache; the others wait and then read it.
            if self.ctx.is_main:
                load_records("synth", None, "train", synth=synth)
            barrier(self.ctx)
        if cfg.dataset == STREAM_DATASET:  # the training split streams from its shards (train/shard_data.py)
            from .shard_data import ShardTrainData

            self.shard_data, train = ShardTrainData(cfg.data_dir), []
        else:
            train = load_records(cfg.dataset, cfg.data_dir, "train", synth=synth, **options)
        val = load_records(cfg.dataset, cfg.data_dir, cfg.eval_split, synth=synth, **options) if self.ctx.is_main else []
        return train, val

    def build_tokenizer(self, model_config: ModelConfig, train: list[ImageTextRecord], resume_dir: Path | None):
        if resume_dir is not None:
            return load_tokenizer(resume_dir)
        if self.cfg.pretrained and model_config.text.hf_name:
            return load_pretrained_tokenizer(model_config.text.hf_name, model_config.text.trust_remote_code)
        if self.shard_data is not None:
            return tokenizer_from_vocab(vocab_from_counts(self.shard_data.char_counts()))
        # Counted over the captions joined by Arrow: no Python string per caption.
        return tokenizer_from_vocab(vocab_from_counts(count_chars_joined(joined_captions(train))))

    def make_plan(self, batches_per_epoch: int, model_config: ModelConfig, total: int | None = None, seconds_per_step: float | None = None) -> TrainingPlan:
        """The run's steps and warm-ups from its options and the data size (engine/budget.py)."""
        from ..durations import parse_duration

        cfg = self.cfg
        return build_plan(
            PRETRAIN_RULE, batches_per_epoch=batches_per_epoch, steps=cfg.steps, epochs=cfg.epochs,
            accum_steps=cfg.accum_steps, warmup=cfg.warmup, queue_warmup=cfg.queue_warmup, pretrained=cfg.pretrained,
            loss=model_config.loss, queue_size=model_config.queue_size, global_batch=cfg.batch_size * self.ctx.world_size,
            time_budget=parse_duration(cfg.time_budget) if cfg.time_budget is not None else None,
            total=total, seconds_per_step=seconds_per_step,
        )

    def warn(self, message: str) -> None:
        """Print a warning once."""
        if message not in self.warnings:
            self.warnings.append(message)
            self.log(f"[yellow]warning:[/yellow] {message}")

    def announce_plan(self, model_config: ModelConfig, images: int) -> None:
        cfg, plan = self.cfg, self.plan
        self.log(plan.describe(queue=model_config.loss == "moco"))
        for message in plan_warnings(
            plan, PRETRAIN_RULE, images=images, queue_size=model_config.queue_size if model_config.loss == "moco" else None,
            global_batch=cfg.batch_size * self.ctx.world_size, warmup_given=cfg.warmup is not None,
            queue_warmup_given=cfg.queue_warmup != "auto",
        ):
            if plan.source == "--time-budget" and plan.seconds_per_step is None and "is short for" in message:
                continue  # the provisional plan: judged once the speed is measured
            self.warn(message)

    def check_queue(self, model_config: ModelConfig) -> None:
        if model_config.loss != "moco":
            return
        global_batch = self.cfg.batch_size * self.ctx.world_size
        if model_config.queue_size % global_batch:
            suggestion = max(global_batch, round(model_config.queue_size / global_batch) * global_batch)
            raise UsageError(
                f"the queue size ({model_config.queue_size}) must be a multiple of the global batch "
                f"({self.cfg.batch_size} per process x {self.ctx.world_size} process(es) = {global_batch}); "
                f"try --queue-size {suggestion}."
            )

    def make_optimizer(self, model: torch.nn.Module):
        decay, no_decay = [], []
        for name, param in model.named_parameters():
            if not param.requires_grad:
                continue
            (decay if param.ndim >= 2 and "embeddings" not in name else no_decay).append(param)
        groups = [
            {"params": decay, "weight_decay": self.cfg.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        return adamw(groups, self.cfg.lr)

    # Checkpoints ------------------------------------------------------------------
    def save(self, name: str, step: int, model, tokenizer, model_config, optimizer, scheduler, final_metrics=None) -> Path:
        raw = model.module if hasattr(model, "module") else model
        state = raw.state_dict()
        query = raw.query_state_dict()
        rest = {k: v for k, v in state.items() if k not in query}
        training_state = {
            "step": step,
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng": rng_state(),
            "model_rest": rest,
            "skipped_images": self.skipped_images,
            "train_config": dataclasses.asdict(self.cfg),
            "world_size": self.ctx.world_size,
            "plan": self.plan.to_dict() if self.plan is not None else None,
        }
        info = {
            "step": step,
            "vocab_size": len(tokenizer),
            "text_model_config": raw.text_encoder.language_model.config.to_dict(),
        }
        if final_metrics is not None:
            info["val_metrics"] = final_metrics
        path = write_checkpoint(
            self.out / name,
            CheckpointContents(
                model_config=model_config,
                query_state=query,
                tokenizer=tokenizer,
                info=info,
                training_state=training_state,
                metrics_lines=list(self.metrics_lines),
            ),
        )
        prune_checkpoints(self.out, self.cfg.keep)
        return path

    def record(self, entry: dict) -> None:
        if not self.ctx.is_main:
            return
        line = strict_json.dumps(entry, ensure_ascii=False) + "\n"
        self.metrics_lines.append(line)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)
        if self.metrics_writer is not None:
            self.metrics_writer.write(entry)

    def resume_dir(self) -> Path | None:
        resume = self.cfg.resume
        if not resume:
            return None
        if resume == "auto":
            return latest_checkpoint(self.out)
        path = Path(resume)
        return resolve_checkpoint(path) if not (path / "training_state.pt").is_file() else path

    # The run ----------------------------------------------------------------------
    def run(self) -> RunResult:
        from ..engine.metrics import MetricsWriter

        from ..engine.run_dir import discard_failed_start

        with discard_failed_start(self.out, enabled=self.ctx.is_main):
            if self.ctx.is_main:
                self.metrics_writer = MetricsWriter(self.out)
            try:
                return self._run()
            finally:
                if self.metrics_writer is not None:
                    self.metrics_writer.close()

    def _run(self) -> RunResult:
        cfg, ctx = self.cfg, self.ctx
        if ctx.device.type == "cpu" and cfg.precision == "fp16":
            raise UsageError("--precision fp16 needs a GPU (it relies on a GradScaler); use bf16 or fp32 on CPU.")
        if ctx.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {cfg.device} was asked for but no GPU is available.")
        self.out.mkdir(parents=True, exist_ok=True)
        resume_dir = self.resume_dir()
        if cfg.resume and cfg.resume != "auto" and resume_dir is None:
            raise UsageError(f"--resume {cfg.resume}: no checkpoint found.")
        if resume_dir is not None:
            cfg = self.cfg = self.resume_config(resume_dir)
        elif cfg.resume == "auto":
            self.log(f"No checkpoint in {self.out} to resume from; starting a new run.")

        model_config = apply_overrides(get_model_config(cfg.model), cfg)
        if resume_dir is not None:
            from ..engine.checkpoint import model_config_of

            model_config = model_config_of(resume_dir)
        self.check_queue(model_config)
        train_records, val_records = self.load_data()
        tokenizer = self.build_tokenizer(model_config, train_records, resume_dir)
        release_freed_memory()  # what reading the annotations and counting characters freed
        settings = ImageSettings.from_config(model_config.image)

        seed_everything(cfg.seed)
        model = create_model(model_config, vocab_size=len(tokenizer), pretrained=cfg.pretrained and resume_dir is None)
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(model)
        model.to(ctx.device)
        optimizer = self.make_optimizer(model)

        if self.shard_data is not None:
            probe = self.shard_data.stream(None, batch_size=cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
        else:
            caption_counts = count_captions(train_records)
            probe = PairSampler(caption_counts, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
        images = self.shard_data.images if self.shard_data is not None else len(train_records)
        self.plan = self.make_plan(probe.batches_per_epoch, model_config)
        # The schedule reads the plan at every step, so a time budget can set it after measuring.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, self.plan.warmup, self.plan.total))

        step = 0
        if resume_dir is not None:
            step = self.restore(resume_dir, model, optimizer, scheduler)
            if self.restored_plan and cfg.steps is None and cfg.epochs is None:
                self.plan = TrainingPlan.from_dict(self.restored_plan)  # a resume keeps the run's plan
            if self.metrics_writer is not None:
                self.metrics_writer.purge_step = step + 1
            if step >= self.plan.total:
                raise UsageError(
                    f"the checkpoint {resume_dir} is at step {step}, the end of a {self.plan.total}-step run; "
                    f"give --steps above {step} to train further."
                )
            self.log(f"Resumed from {resume_dir} at step {step}.")
            if ctx.is_main and not (self.out / "train_config.json").exists():
                (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, ensure_ascii=False), encoding="utf-8")
        elif ctx.is_main:
            (self.out / "metrics.jsonl").write_text("", encoding="utf-8")
            (self.out / "train_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, ensure_ascii=False), encoding="utf-8")

        ddp_model = model
        if ctx.distributed:
            from torch.nn.parallel import DistributedDataParallel

            ddp_model = DistributedDataParallel(
                model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None, broadcast_buffers=False
            )

        workers = default_workers() if cfg.workers is None else cfg.workers
        if self.shard_data is not None:
            loader = self.shard_data.loader(
                tokenizer, model_config.text.max_length, settings, batch_size=cfg.batch_size, seed=cfg.seed, rank=ctx.rank,
                world_size=ctx.world_size, start_batch=step * cfg.accum_steps, workers=workers, pin_memory=ctx.device.type == "cuda",
            )
        else:
            token_ids = CaptionTokens(train_records, tokenizer, model_config.text.max_length)  # tokenised per pair, in the workers
            sampler = PairSampler(
                caption_counts, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size,
                start_batch=step * cfg.accum_steps,
            )
            loader = DataLoader(
                PairDataset(train_records, token_ids, settings),
                batch_size=cfg.batch_size,
                sampler=sampler,
                collate_fn=PairCollator(settings.max_regions, tokenizer.pad_token_id or 0),
                num_workers=workers,
                pin_memory=ctx.device.type == "cuda",
                persistent_workers=workers > 0,
                prefetch_factor=4 if workers > 0 else None,
                generator=torch.Generator(),
            )
        scaler = torch.amp.GradScaler("cuda") if cfg.precision == "fp16" else None
        self.key_shuffle = None
        if ctx.distributed and model.uses_queues and (cfg.shuffle_bn or (cfg.shuffle_bn is None and has_batchnorm(model.image_encoder))):
            self.key_shuffle = KeyBatchShuffle(ctx, cfg.seed)
            self.key_shuffle.step = step * cfg.accum_steps
        total = self.plan.total
        self.log(
            f"Training {model_config.name} ({count_parameters(model):,} trainable parameters) on {images:,} "
            f"images for {total:,} steps, batch {cfg.batch_size} x {ctx.world_size} process(es), loss {model_config.loss}, "
            f"device {ctx.device}."
        )
        self.announce_plan(model_config, images)
        stop_reason = None
        start_time = time.monotonic()
        timer = StepTimer(step, self.clock(), skip=self.speed_steps[0], measure=self.speed_steps[1])
        watch = LossWatch(hint="try another --lr (or, with the queue loss on towers from scratch, --queue-warmup or --loss clip)")
        with StopRequest() as stop, self.progress(total, step) as progress:
            batches = iter(loader)
            window_start, window_pairs = time.monotonic(), 0
            while step < total:
                loss_value, pairs = self.train_step(ddp_model, model, batches, optimizer, scaler, in_batch=step < self.plan.queue_warmup)
                scheduler.step()
                step += 1
                window_pairs += pairs * ctx.world_size
                lr = optimizer.param_groups[0]["lr"]
                saving = bool(cfg.save_every) and step % cfg.save_every == 0
                problem = non_finite_state(loss_value, lr, model if saving or step % cfg.log_every == 0 or step == total else None)
                if all_reduce_max_flag(problem is not None, ctx, ctx.device):
                    raise TrainingError(self.non_finite_message(problem or "another process found a NaN or infinity", step))
                total = self.after_step(step, loss_value, timer, watch, model_config, probe.batches_per_epoch, images, resume_dir is not None)
                progress.set_total(total)
                if step % cfg.log_every == 0 or step == total:
                    elapsed = time.monotonic() - window_start
                    rate = window_pairs / elapsed if elapsed > 0 else 0.0
                    self.record({"step": step, "loss": round(loss_value, 6), "lr": lr, "pairs_per_s": round(rate, 2), "skipped_images": self.skipped_images, "time": round(time.monotonic() - start_time, 2)})
                    window_start, window_pairs = time.monotonic(), 0
                    progress.update(step, loss_value, lr, rate)
                if cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                    self.evaluate(model, tokenizer, val_records, settings, model_config, step)
                if cfg.save_every and step % cfg.save_every == 0 and step < total and ctx.is_main:
                    self.save(step_name(step), step, model, tokenizer, model_config, optimizer, scheduler)
                want_stop = stop.signal is not None or (cfg.max_time is not None and time.monotonic() - start_time >= cfg.max_time)
                if step < total and all_reduce_max_flag(want_stop, ctx, ctx.device):
                    stop_reason = signal.Signals(stop.signal).name if stop.signal is not None else "max-time"
                    break
        if stop_reason is not None:
            path = self.save(step_name(step), step, model, tokenizer, model_config, optimizer, scheduler) if ctx.is_main else None
            barrier(ctx)
            self.log(f"Stopped ({stop_reason}) at step {step}; checkpoint {path}. Continue with --resume auto --out {self.out}.")
            return RunResult(out=self.out, step=step, metrics=None, checkpoint=path, stopped_early=stop_reason)

        metrics = self.evaluate(model, tokenizer, val_records, settings, model_config, step)
        path = None
        if ctx.is_main:
            path = self.save("final", step, model, tokenizer, model_config, optimizer, scheduler, final_metrics=metrics)
            (self.out / "recall.json").write_text(strict_json.dumps(metrics, indent=2), encoding="utf-8")
        barrier(ctx)
        return RunResult(out=self.out, step=step, metrics=metrics, checkpoint=path)

    def after_step(self, step: int, loss: float, timer: StepTimer, watch: LossWatch, model_config, batches_per_epoch: int, images: int, resumed: bool) -> int:
        """Speed estimate, time-budget planning and the stuck-loss warning; the run's total."""
        seconds_per_step = timer.observe(step, self.clock())
        if seconds_per_step is not None:
            # Every process plans with the same (averaged) figures, so all stop at the same step.
            seconds_per_step = all_reduce_mean(seconds_per_step, self.ctx, self.ctx.device)
            elapsed = all_reduce_mean(self.clock() - timer.start_time, self.ctx, self.ctx.device)
            if self.plan.source == "--time-budget" and self.plan.seconds_per_step is None:
                total = steps_in_budget(self.plan.time_budget, step=step, elapsed=elapsed, seconds_per_step=seconds_per_step)
                self.plan = self.make_plan(batches_per_epoch, model_config, total=total, seconds_per_step=seconds_per_step)
                self.log(f"Time budget: {seconds_per_step:.3f} s/step measured over the first steps.")
                self.announce_plan(model_config, images)
            self.log(estimate_line(self.plan, step, seconds_per_step))
        if not resumed:
            message = watch.update(step, loss, self.plan.total, begin=self.plan.queue_warmup)
            if message:
                self.warn(message)
        return self.plan.total

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

    def train_step(self, ddp_model, model, batches, optimizer, scaler, in_batch: bool = False) -> tuple[float, int]:
        cfg, ctx = self.cfg, self.ctx
        if model.uses_queues:
            model.momentum_update()
        total_loss, pairs = 0.0, 0
        for micro in range(cfg.accum_steps):
            batch = next(batches)
            if batch["bad"]:
                if not cfg.skip_bad:
                    raise DataError(f"{batch['bad'][0].message} (pass --skip-bad to skip and count unreadable images)")
                self.skipped_images += len(batch["bad"])
            if batch["size"] == 0:
                continue
            size = batch["size"]
            batch = self.to_device(batch, model)
            sync = micro == cfg.accum_steps - 1 or not ctx.distributed
            context = nullcontext() if sync else ddp_model.no_sync()
            with context:
                with autocast_context(ctx.device, cfg.precision):
                    out = ddp_model(batch, key_shuffle=self.key_shuffle, in_batch=in_batch)
                loss = out.loss / cfg.accum_steps
                if scaler is not None:
                    scaler.scale(loss).backward()
                else:
                    loss.backward()
            total_loss += float(out.loss.detach())
            pairs += size
            if out.image_keys is not None:
                key_ids = all_gather_variable(out.key_ids, ctx) if out.key_ids is not None else None
                model.enqueue(all_gather_variable(out.image_keys.float(), ctx), all_gather_variable(out.text_keys.float(), ctx), key_ids)
        if scaler is not None:
            scaler.unscale_(optimizer)
        if cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return all_reduce_mean(total_loss / cfg.accum_steps, ctx, ctx.device), pairs

    def to_device(self, batch: dict, model) -> dict:
        device = self.ctx.device
        images = batch["images"].to(device, non_blocking=True)
        cfg = model.config.image
        return {
            "images": normalize_images(images, cfg.mean, cfg.std),
            "boxes": batch["boxes"].to(device, non_blocking=True),
            "box_mask": batch["box_mask"].to(device, non_blocking=True),
            "input_ids": batch["input_ids"].to(device, non_blocking=True),
            "attention_mask": batch["attention_mask"].to(device, non_blocking=True),
            "image_ids": batch["image_ids"].to(device, non_blocking=True),
            "caption_hashes": batch["caption_hashes"].to(device, non_blocking=True),
        }

    def resume_config(self, resume_dir: Path) -> TrainConfig:
        """This run's config on resume (engine/resume.py): options not given come from the
        checkpoint's run; a conflicting one is refused; those that change are announced."""
        from ..engine.checkpoint import model_config_of
        from ..engine.resume import reconcile

        state = load_training_state(resume_dir)
        saved = state.get("train_config") or {}
        cfg, changed = reconcile(self.cfg, self.explicit, saved, model_config_of(resume_dir), int(state["step"]))
        cfg.validate()
        if changed:
            self.log(f"Resuming {resume_dir} with {'; '.join(changed)}.")
        return cfg

    def restore(self, resume_dir: Path, model, optimizer, scheduler) -> int:
        state = load_training_state(resume_dir)
        query = load_query_state(resume_dir)
        full = {**query, **state["model_rest"]}
        missing, unexpected = model.load_state_dict(full, strict=False)
        if missing or unexpected:
            from ..errors import CheckpointError

            raise CheckpointError(
                f"{resume_dir} does not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
            )
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        restore_rng_state(state["rng"])
        self.skipped_images = int(state.get("skipped_images", 0))
        self.restored_plan = state.get("plan")
        if self.ctx.is_main:
            metrics_file = resume_dir / "metrics.jsonl"
            self.metrics_lines = metrics_file.read_text(encoding="utf-8").splitlines(keepends=True) if metrics_file.exists() else []
            (self.out / "metrics.jsonl").write_text("".join(self.metrics_lines), encoding="utf-8")
        return int(state["step"])

    def evaluate(self, model, tokenizer, records, settings, model_config, step) -> dict | None:
        metrics = None
        if self.ctx.is_main and records:
            metrics = evaluate_retrieval(
                model, tokenizer, records, settings, device=self.ctx.device, max_length=model_config.text.max_length,
                precision=self.cfg.precision if self.cfg.precision != "fp16" or self.ctx.device.type == "cuda" else "fp32",
            )
            self.record({"step": step, "split": self.cfg.eval_split, **metrics})
            self.log(
                f"step {step}: {self.cfg.eval_split} mean recall {metrics['mean_recall']:.2f} "
                f"(text->image R@1 {metrics['t2i_r1']:.2f}, image->text R@1 {metrics['i2t_r1']:.2f})"
            )
        barrier(self.ctx)
        return metrics

    def progress(self, total: int, start: int):
        return TrainingProgress(total, self.console, start=start, enabled=self.ctx.is_main)


def non_finite_state(loss: float, lr: float, model: torch.nn.Module | None) -> str | None:
    """What went NaN or infinite after a step: the loss, the learning rate or (when `model`
    is given: at logged and saved steps, as the check costs a pass over every parameter) a
    parameter; else None. The largest magnitude of all parameters is NaN or infinite exactly
    when one of them is."""
    if not math.isfinite(loss):
        return f"the loss became {loss}"
    if not math.isfinite(lr):
        return f"the learning rate became {lr}"
    if model is None:
        return None
    params = [p.detach() for p in model.parameters() if p.is_floating_point()]
    if params and not math.isfinite(float(torch.nn.utils.get_total_norm(params, norm_type=math.inf))):
        name = next(n for n, p in model.named_parameters() if p.is_floating_point() and not bool(torch.isfinite(p).all()))
        return f"the parameter {name} became non-finite"
    return None


# torch's public BatchNorm classes (their common base class is private).
_BATCHNORMS = (
    torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d, torch.nn.SyncBatchNorm,
    torch.nn.LazyBatchNorm1d, torch.nn.LazyBatchNorm2d, torch.nn.LazyBatchNorm3d,
)  # fmt: skip


def has_batchnorm(module: torch.nn.Module) -> bool:
    return any(isinstance(m, _BATCHNORMS) for m in module.modules())


def count_parameters(model: torch.nn.Module) -> int:
    names = ("image_encoder.", "text_encoder.")
    return sum(p.numel() for n, p in model.named_parameters() if p.requires_grad and n.startswith(names))


def enable_grad_checkpointing(model) -> None:
    """Recompute activations in the backward pass of both towers' backbones."""
    backbone = model.image_encoder.backbone
    if hasattr(backbone, "set_grad_checkpointing"):
        backbone.set_grad_checkpointing(True)
    lm = model.text_encoder.language_model
    if hasattr(lm, "gradient_checkpointing_enable"):
        lm.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
