"""`wenlan pretrain`'s trainer: data, model, the step and evaluation (engine/trainer.py
runs the loop, logs, plans, stops, checkpoints and resumes).

One process or many (torchrun): every rank runs the same steps on its slice of each
global batch; rank 0 alone logs, evaluates and writes checkpoints.
"""

from __future__ import annotations

import dataclasses
import json
import os
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
from ..engine.device import autocast_context, check_precision
from ..errors import CheckpointError, DataError, UsageError
from ..eval.evaluate import evaluate_retrieval
from ..models.normalization import resolve_image_normalization
from ..models.registry import create_model, get_model_config
from ..models.tokenizer import count_chars_joined, load_pretrained_tokenizer, load_tokenizer, tokenizer_from_vocab, vocab_from_counts
from ..engine.checkpoint import CheckpointContents, load_query_state, load_training_state, model_config_of
from ..engine.distributed import DistContext, KeyBatchShuffle, all_gather_variable, all_reduce_mean, barrier, init_distributed
from ..engine.optim import make_optimizer
from ..engine.budget import PRETRAIN_RULE, TrainingPlan, build_plan, plan_warnings
from ..engine.rng import seed_everything
from ..engine.trainer import Trainer


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


class Pretrainer(Trainer):
    """BriVL pretraining on image-caption pairs (queue or in-batch contrastive loss)."""

    label, unit, rate_key = "pretrain", "pairs/s", "pairs_per_s"
    loss_hint = "try another --lr (or, with the queue loss on towers from scratch, --queue-warmup or --loss clip)"

    def __init__(self, cfg: TrainConfig, console=None, ctx: DistContext | None = None, explicit: set[str] | None = None) -> None:
        cfg.validate()
        super().__init__(cfg, console, ctx or init_distributed(cfg.device))
        # The options given for this run (None: all); a resume takes the others from its checkpoint.
        self.explicit = explicit
        self.shard_data = None  # --dataset webdataset: the streamed training split
        self.model_config: ModelConfig | None = None
        self.tokenizer = None
        self.settings: ImageSettings | None = None
        self.train_records: list[ImageTextRecord] = []
        self.caption_counts = None  # captions per training image, for the sampler
        self.val_records: list[ImageTextRecord] = []
        self.images = 0  # training images, which the plan's warnings judge the run against
        self.ddp_model = None  # what the forward pass runs through (the model, DDP-wrapped when distributed)
        self.loader = None
        self.scaler = None  # --precision fp16's GradScaler
        self.key_shuffle: KeyBatchShuffle | None = None  # shuffled BatchNorm of the key encoders

    # Set-up -----------------------------------------------------------------------
    def build(self) -> None:
        resume_dir = self.open_run()
        self.build_data(resume_dir)
        self.build_model(resume_dir)
        if resume_dir is not None:
            cfg = self.cfg
            self.resume(resume_dir, keep_plan=cfg.steps is None and cfg.epochs is None)  # a resume keeps the run's plan
            if self.ctx.is_main and not (self.out / "train_config.json").exists():
                self.write_config()
        elif self.ctx.is_main:
            (self.out / "metrics.jsonl").write_text("", encoding="utf-8")
            self.write_config()
        self.ddp_model = self.wrap(self.model)
        self.loader = self.make_loader()
        self.scaler = torch.amp.GradScaler("cuda") if self.cfg.precision == "fp16" else None
        self.key_shuffle = self.make_key_shuffle()
        cfg, ctx, mc = self.cfg, self.ctx, self.model_config
        self.log(
            f"Training {mc.name} ({count_parameters(self.model):,} trainable parameters) on {self.images:,} "
            f"images for {self.plan.total:,} steps, batch {cfg.batch_size} x {ctx.world_size} process(es), loss {mc.loss}, "
            f"device {ctx.device}."
        )
        self.announce_plan()

    def open_run(self) -> Path | None:
        """The device checks, the run directory, and the checkpoint to resume (whose run's
        options become this run's)."""
        cfg, ctx = self.cfg, self.ctx
        check_precision(cfg.precision, ctx.device)  # fp16 relies on a GradScaler: a GPU only
        if ctx.device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {cfg.device} was asked for but no GPU is available.")
        self.out.mkdir(parents=True, exist_ok=True)
        resume_dir = self.find_resume(cfg.resume)
        if cfg.resume and cfg.resume != "auto" and resume_dir is None:
            raise UsageError(f"--resume {cfg.resume}: no checkpoint found.")
        if resume_dir is not None:
            self.cfg = self.resume_config(resume_dir)
        elif cfg.resume == "auto":
            self.log(f"No checkpoint in {self.out} to resume from; starting a new run.")
        return resume_dir

    def build_data(self, resume_dir: Path | None) -> None:
        model_config = apply_overrides(get_model_config(self.cfg.model), self.cfg)
        if resume_dir is not None:
            model_config = model_config_of(resume_dir)
        self.model_config = model_config
        self.check_queue(model_config)
        self.train_records, self.val_records = self.load_data()
        self.tokenizer = self.build_tokenizer(model_config, self.train_records, resume_dir)
        release_freed_memory()  # what reading the annotations and counting characters freed
        self.settings = ImageSettings.from_config(model_config.image)

    def build_model(self, resume_dir: Path | None) -> None:
        """The model (seeded), its optimizer, and the plan from the data's size."""
        cfg, ctx = self.cfg, self.ctx
        seed_everything(cfg.seed)
        model = create_model(self.model_config, vocab_size=len(self.tokenizer), pretrained=cfg.pretrained and resume_dir is None)
        if cfg.grad_checkpointing:
            enable_grad_checkpointing(model)
        model.to(ctx.device)
        self.model = model
        optimizer = self.make_optimizer(model)
        if self.shard_data is not None:
            probe = self.shard_data.stream(None, batch_size=cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
            self.images = self.shard_data.images
        else:
            self.caption_counts = count_captions(self.train_records)
            probe = PairSampler(self.caption_counts, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size)
            self.images = len(self.train_records)
        self.batches_per_epoch = probe.batches_per_epoch
        self.state.batches_per_step = cfg.accum_steps
        self.state.schedule(optimizer, self.make_plan(probe.batches_per_epoch, self.model_config))

    def write_config(self) -> None:
        text = json.dumps(dataclasses.asdict(self.cfg), indent=2, ensure_ascii=False)
        (self.out / "train_config.json").write_text(text, encoding="utf-8")

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

    def make_plan(
        self, batches_per_epoch: int, model_config: ModelConfig | None = None, *, total: int | None = None, seconds_per_step: float | None = None
    ) -> TrainingPlan:
        """The run's steps and warm-ups from its options and the data size (engine/budget.py)."""
        from ..durations import parse_duration

        cfg, model_config = self.cfg, model_config or self.model_config
        return build_plan(
            PRETRAIN_RULE, batches_per_epoch=batches_per_epoch, steps=cfg.steps, epochs=cfg.epochs,
            accum_steps=cfg.accum_steps, warmup=cfg.warmup, queue_warmup=cfg.queue_warmup, pretrained=cfg.pretrained,
            loss=model_config.loss, queue_size=model_config.queue_size, global_batch=cfg.batch_size * self.ctx.world_size,
            time_budget=parse_duration(cfg.time_budget) if cfg.time_budget is not None else None,
            total=total, seconds_per_step=seconds_per_step,
        )

    def plan_description(self) -> str:
        return self.plan.describe(queue=self.model_config.loss == "moco")

    def plan_warnings(self) -> list[str]:
        cfg, mc = self.cfg, self.model_config
        return plan_warnings(
            self.plan, PRETRAIN_RULE, images=self.images, queue_size=mc.queue_size if mc.loss == "moco" else None,
            global_batch=cfg.batch_size * self.ctx.world_size, warmup_given=cfg.warmup is not None,
            queue_warmup_given=cfg.queue_warmup != "auto",
        )

    def eval_every(self) -> int:
        return self.cfg.eval_every

    def save_every(self) -> int:
        return self.cfg.save_every

    def keep_checkpoints(self) -> int:
        return self.cfg.keep

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

    def make_optimizer(self, model: torch.nn.Module) -> torch.optim.Optimizer:
        return make_optimizer([(model, self.cfg.lr)], lr=self.cfg.lr, weight_decay=self.cfg.weight_decay)

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model itself, or DDP around it when distributed."""
        if not self.ctx.distributed:
            return model
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [self.ctx.device.index] if self.ctx.device.type == "cuda" else None
        return DistributedDataParallel(model, device_ids=device_ids, broadcast_buffers=False)

    def make_loader(self):
        """Batches from the run's data position on (a resume continues the data order)."""
        cfg, ctx = self.cfg, self.ctx
        workers = default_workers() if cfg.workers is None else cfg.workers
        start, max_length = self.state.data_position, self.model_config.text.max_length
        if self.shard_data is not None:
            return self.shard_data.loader(
                self.tokenizer, max_length, self.settings, batch_size=cfg.batch_size, seed=cfg.seed, rank=ctx.rank,
                world_size=ctx.world_size, start_batch=start, workers=workers, pin_memory=ctx.device.type == "cuda",
            )
        token_ids = CaptionTokens(self.train_records, self.tokenizer, max_length)  # tokenised per pair, in the workers
        sampler = PairSampler(
            self.caption_counts, cfg.batch_size, seed=cfg.seed, rank=ctx.rank, world_size=ctx.world_size, start_batch=start
        )
        return DataLoader(
            PairDataset(self.train_records, token_ids, self.settings),
            batch_size=cfg.batch_size,
            sampler=sampler,
            collate_fn=PairCollator(self.settings.max_regions, self.tokenizer.pad_token_id or 0),
            num_workers=workers,
            pin_memory=ctx.device.type == "cuda",
            persistent_workers=workers > 0,
            prefetch_factor=4 if workers > 0 else None,
            generator=torch.Generator(),
        )

    def make_key_shuffle(self) -> KeyBatchShuffle | None:
        cfg, ctx = self.cfg, self.ctx
        wanted = cfg.shuffle_bn or (cfg.shuffle_bn is None and has_batchnorm(self.model.image_encoder))
        if not (ctx.distributed and self.model.uses_queues and wanted):
            return None
        shuffle = KeyBatchShuffle(ctx, cfg.seed)
        shuffle.step = self.state.data_position
        return shuffle

    # Checkpoints ------------------------------------------------------------------
    def checkpoint_contents(self, final_metrics: dict | None = None) -> CheckpointContents:
        model = self.model
        query = model.query_state_dict()
        training_state = {
            **self.state.state_dict(),
            "model_rest": {k: v for k, v in model.state_dict().items() if k not in query},
            "train_config": dataclasses.asdict(self.cfg),
            "world_size": self.ctx.world_size,
        }
        info = {
            "step": self.state.step,
            "vocab_size": len(self.tokenizer),
            "text_model_config": model.text_encoder.language_model.config.to_dict(),
        }
        if final_metrics is not None:
            info["val_metrics"] = final_metrics
        return CheckpointContents(
            model_config=self.model_config, query_state=query, tokenizer=self.tokenizer, info=info,
            training_state=training_state, metrics_lines=list(self.metrics_lines),
        )

    def resume_config(self, resume_dir: Path) -> TrainConfig:
        """This run's config on resume (engine/resume.py): options not given come from the
        checkpoint's run; a conflicting one is refused; those that change are announced."""
        from ..engine.resume import reconcile

        state = load_training_state(resume_dir)
        saved = state.get("train_config") or {}
        cfg, changed = reconcile(self.cfg, self.explicit, saved, model_config_of(resume_dir), int(state["step"]))
        cfg.validate()
        if changed:
            self.log(f"Resuming {resume_dir} with {'; '.join(changed)}.")
        return cfg

    def load_model_state(self, directory: Path, saved: dict) -> None:
        full = {**load_query_state(directory), **saved["model_rest"]}
        missing, unexpected = self.model.load_state_dict(full, strict=False)
        if missing or unexpected:
            raise CheckpointError(
                f"{directory} does not match the model: missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]}."
            )

    # The loop's hooks -------------------------------------------------------------
    def batches(self):
        return iter(self.loader)

    def train_step(self, batches) -> tuple[float, int]:
        """Momentum update, then per micro-batch forward, backward and enqueue of the keys
        gathered from every process; then the optimizer step. (The step's mean loss over
        the processes, pairs trained on this process.)"""
        cfg, ctx, model = self.cfg, self.ctx, self.model
        # In-batch loss during the queue warm-up; without a plan (a bare step, as benchmarks/data.py times it) the queue's.
        in_batch = self.plan is not None and self.state.step < self.plan.queue_warmup
        if model.uses_queues:
            model.momentum_update()
        total_loss, pairs = 0.0, 0
        for micro in range(cfg.accum_steps):
            batch = next(batches)
            if batch["bad"]:
                if not cfg.skip_bad:
                    raise DataError(f"{batch['bad'][0].message} (pass --skip-bad to skip and count unreadable images)")
                self.state.skipped_images += len(batch["bad"])
            if batch["size"] == 0:
                continue
            size = batch["size"]
            batch = self.to_device(batch)
            sync = micro == cfg.accum_steps - 1 or not ctx.distributed
            with nullcontext() if sync else self.ddp_model.no_sync():
                with autocast_context(ctx.device, cfg.precision):
                    out = self.ddp_model(batch, key_shuffle=self.key_shuffle, in_batch=in_batch)
                loss = out.loss / cfg.accum_steps
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            total_loss += float(out.loss.detach())
            pairs += size
            if out.image_keys is not None:
                key_ids = all_gather_variable(out.key_ids, ctx) if out.key_ids is not None else None
                model.enqueue(all_gather_variable(out.image_keys.float(), ctx), all_gather_variable(out.text_keys.float(), ctx), key_ids)
        self.optimizer_step()
        return all_reduce_mean(total_loss / cfg.accum_steps, ctx, ctx.device), pairs

    def optimizer_step(self) -> None:
        optimizer, scaler = self.state.optimizer, self.scaler
        if scaler is not None:
            scaler.unscale_(optimizer)
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    def to_device(self, batch: dict) -> dict:
        device = self.ctx.device
        images = batch["images"].to(device, non_blocking=True)
        cfg = self.model.config.image
        return {
            "images": normalize_images(images, cfg.mean, cfg.std),
            "boxes": batch["boxes"].to(device, non_blocking=True),
            "box_mask": batch["box_mask"].to(device, non_blocking=True),
            "input_ids": batch["input_ids"].to(device, non_blocking=True),
            "attention_mask": batch["attention_mask"].to(device, non_blocking=True),
            "image_ids": batch["image_ids"].to(device, non_blocking=True),
            "caption_hashes": batch["caption_hashes"].to(device, non_blocking=True),
        }

    def evaluate(self, step: int) -> dict | None:
        """Recall@K on the evaluation split (rank 0), recorded and printed."""
        metrics = None
        if self.ctx.is_main and self.val_records:
            cfg = self.cfg
            metrics = evaluate_retrieval(
                self.model, self.tokenizer, self.val_records, self.settings, device=self.ctx.device,
                max_length=self.model_config.text.max_length,
                precision=cfg.precision if cfg.precision != "fp16" or self.ctx.device.type == "cuda" else "fp32",
            )
            self.record({"step": step, "split": cfg.eval_split, **metrics})
            self.log(
                f"step {step}: {cfg.eval_split} mean recall {metrics['mean_recall']:.2f} "
                f"(text->image R@1 {metrics['t2i_r1']:.2f}, image->text R@1 {metrics['i2t_r1']:.2f})"
            )
        barrier(self.ctx)
        return metrics

    def finish(self, stopped: str | None) -> RunResult:
        """A stop: a step checkpoint to resume from. The plan's end: the last evaluation,
        the final checkpoint and recall.json."""
        step = self.state.step
        if stopped is not None:
            path = self.save_on_stop(stopped)
            return RunResult(out=self.out, step=step, metrics=None, checkpoint=path, stopped_early=stopped)
        metrics = self.evaluate(step)
        path = None
        if self.ctx.is_main:
            path = self.save_checkpoint("final", final_metrics=metrics)
            (self.out / "recall.json").write_text(strict_json.dumps(metrics, indent=2), encoding="utf-8")
        barrier(self.ctx)
        return RunResult(out=self.out, step=step, metrics=metrics, checkpoint=path)


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
