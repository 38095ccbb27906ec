"""`wenlan finetune-caption`'s engine: a caption decoder on BriVL's image tower.

Teacher forcing with label smoothing, AdamW with warm-up + cosine decay, periodic
validation scored with the official AIC-ICC protocol, the best checkpoint kept by CIDEr.
With the tower frozen, its region sequences are computed once for the training images
and training runs the decoder alone.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from wenlan_cli import strict_json
from wenlan_cli.config import ModelConfig, check_number
from wenlan_cli.data.pipeline import (
    CaptionTokens,
    ImageSettings,
    PairCollator,
    PairDataset,
    PairSampler,
    normalize_images,
    pad_token_ids,
)
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.errors import DataError, TrainingError, UsageError
from wenlan_cli.engine.budget import CAPTION_RULE, LossWatch, StepTimer, build_plan, estimate_line, plan_warnings, steps_in_budget
from wenlan_cli.engine.optim import adamw
from wenlan_cli.engine.progress import TrainingProgress

from .decoding import DecodeOptions
from .generate import EVAL_BATCH_SIZE, caption_records, image_loader, score_split
from .model import CaptionModel, HeadConfig, configure_tower, count_trainable, tower_is_frozen

# Cache the frozen tower's region sequences when they take at most this many bytes.
FEATURE_CACHE_LIMIT = 4 * 2**30


@dataclass
class FinetuneConfig:
    """Everything `wenlan finetune-caption` accepts."""

    checkpoint: str
    dataset: str = "synth"
    data_dir: str | None = None
    out: str = "runs/caption"
    train_split: str = "train"
    eval_split: str = "val"
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 64
    lr: float = 2e-3
    # Learning rate of the tower's trainable weights (default: lr / 2).
    tower_lr: float | None = None
    weight_decay: float = 0.01
    # None: CAPTION_RULE's share of the run (100 of the 2,400 steps the rule gives small sets).
    warmup: int | None = None
    grad_clip: float = 1.0
    label_smoothing: float = 0.1
    # Validate every N steps (0: only at the end; None: four times per run).
    eval_every: int | None = None
    beam_size: int = 1
    length_penalty: float = 0.0
    max_len: int = 64
    # The image tower: frozen, its top N backbone blocks (and the layers above) trained, or all
    # trained (the default, also with --train-tower).
    freeze_tower: bool = False
    train_top_blocks: int | None = None
    train_tower: bool = False
    # Build a character vocabulary from the training captions instead of the checkpoint's tokenizer.
    char_vocab: bool = False
    d_model: int = 128
    layers: int = 2
    heads: int = 4
    ff_dim: int = 512
    dropout: float = 0.1
    max_positions: int = 64
    # Run the tower at this input size instead of the pretrain checkpoint's (saved with the captioner).
    image_size: int | None = None
    seed: int = 0
    device: str = "auto"
    workers: int | None = None
    eval_batch_size: int = EVAL_BATCH_SIZE
    log_every: int = 10
    max_time: float | None = None
    # Plan the steps so warm-up and decay end after this long ("10m", "1.5h", seconds).
    time_budget: str | float | None = None
    # Score METEOR in the final validation (periodic validations leave it out: it is slow).
    meteor: bool = True
    # Cache the frozen tower's region sequences in memory (None: when they fit FEATURE_CACHE_LIMIT).
    cache_features: bool | None = None
    skip_bad: bool = False
    image_column: str | None = None
    text_column: str | None = None

    def tower_mode(self) -> tuple[str, int]:
        """("frozen" | "top" | "all", top blocks); the whole tower trains unless told otherwise."""
        chosen = [name for name, on in (
            ("--freeze-tower", self.freeze_tower),
            ("--train-top-blocks", self.train_top_blocks is not None),
            ("--train-tower", self.train_tower),
        ) if on]  # fmt: skip
        if len(chosen) > 1:
            raise UsageError(f"give one of {' / '.join(chosen)}, not both.")
        if self.freeze_tower:
            return "frozen", 0
        if self.train_top_blocks is not None:
            return "top", self.train_top_blocks
        return "all", 0

    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(beam_size=self.beam_size, length_penalty=self.length_penalty, max_len=self.max_len)

    def validate(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give --steps or --epochs, not both.")
        if self.steps is not None and self.steps < 1:
            raise UsageError("--steps must be at least 1.")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError("--epochs must be positive.")
        if self.time_budget is not None:
            from wenlan_cli.durations import parse_duration

            parse_duration(self.time_budget)
            if self.steps is not None or self.epochs is not None:
                raise UsageError("give --time-budget or --steps/--epochs, not both.")
        if self.warmup is not None and self.warmup < 0:
            raise UsageError("--warmup must be 0 or more steps.")
        for name in ("batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.lr <= 0 or (self.tower_lr is not None and self.tower_lr <= 0):
            raise UsageError("learning rates must be positive.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}.")
        if self.image_size is not None and self.image_size < 16:
            raise UsageError(f"--image-size must be at least 16 pixels, not {self.image_size}.")
        if self.train_top_blocks is not None and self.train_top_blocks < 0:
            raise UsageError("--train-top-blocks must be 0 or more.")
        if self.eval_every is not None and self.eval_every < 0:
            raise UsageError("--eval-every must be 0 or more.")
        for name, bound in FINETUNE_BOUNDS.items():
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), *bound)
        self.tower_mode()
        self.decode_options().validate()


@dataclass
class FinetuneResult:
    out: Path
    step: int
    scores: dict  # the best checkpoint's validation scores (score_split's result + "step")
    best: Path
    final: Path
    stopped_early: str | None = None


# The bounds of finetune-caption's numeric options, with the core's rule (wenlan_cli.config.
# check_number): NaN, infinities and values outside are refused naming the option.
FINETUNE_BOUNDS = {
    "lr": (0, None, True, False), "tower_lr": (0, None, True, False), "weight_decay": (0, None, False, False),
    "grad_clip": (0, None, False, False), "epochs": (0, None, True, False), "max_time": (0, None, True, False),
    "workers": (0, 256, False, False), "d_model": (1, 65536, False, False), "layers": (1, 256, False, False),
    "heads": (1, 1024, False, False), "ff_dim": (1, 262144, False, False), "dropout": (0, 1, False, True),
    "max_positions": (1, 8192, False, False), "image_size": (16, 4096, False, False),
}


class CaptionFinetuner:
    def __init__(self, cfg: FinetuneConfig, console=None) -> None:
        cfg.validate()
        self.cfg = cfg
        from rich.console import Console

        self.console = console or Console(stderr=True)
        self.out = Path(cfg.out)
        self.metrics_lines: list[str] = []
        self.skipped_images = 0
        self.warnings: list[str] = []
        # The clock of the time budget and the speed estimate (tests drive it by hand).
        self.clock = time.monotonic
        self.plan = None

    def log(self, message: str) -> None:
        self.console.print(message, soft_wrap=True)

    def record(self, entry: dict) -> None:
        line = strict_json.dumps(entry, ensure_ascii=False) + "\n"
        self.metrics_lines.append(line)
        with open(self.out / "metrics.jsonl", "a", encoding="utf-8") as handle:
            handle.write(line)

    # Set-up -----------------------------------------------------------------------
    def load_data(self) -> tuple[list[ImageTextRecord], list[ImageTextRecord]]:
        from wenlan_cli.data.sources import load_records

        cfg = self.cfg
        options = {k: v for k, v in (("image_column", cfg.image_column), ("text_column", cfg.text_column)) if v}
        if cfg.dataset == "synth" and cfg.data_dir is None:
            self.log("[dim]Preparing the synthetic dataset (generated once, then cached)...[/dim]")
        train = load_records(cfg.dataset, cfg.data_dir, cfg.train_split, **options)
        val = load_records(cfg.dataset, cfg.data_dir, cfg.eval_split, **options)
        if not train:
            raise DataError(f"the {cfg.train_split} split of {cfg.dataset} has no images.")
        if not val:
            raise DataError(f"the {cfg.eval_split} split of {cfg.dataset} has no images to validate on.")
        if not any(r.captions for r in train):
            raise DataError(f"the {cfg.train_split} split of {cfg.dataset} has no captions to learn from.")
        if any(not r.captions for r in val):
            empty = next(r.image_id for r in val if not r.captions)
            raise DataError(f"image {empty!r} of the {cfg.eval_split} split has no reference caption to score against.")
        return [r for r in train if r.captions], val

    def build_tokenizer(self, pretrain_tokenizer, train: list[ImageTextRecord]):
        from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

        if self.cfg.char_vocab:
            return tokenizer_from_vocab(build_char_vocab(c for r in train for c in r.captions))
        return pretrain_tokenizer

    def head_config(self, tokenizer, model_config: ModelConfig) -> HeadConfig:
        cfg = self.cfg

        def special(*names: str) -> int:
            for name in names:
                value = getattr(tokenizer, name, None)
                if isinstance(value, int):
                    return value
            raise UsageError(
                f"the checkpoint's tokenizer has no {names[0].replace('_id', '')}; pass --char-vocab "
                "to build a character vocabulary from the training captions."
            )

        config = HeadConfig(
            vocab_size=len(tokenizer),
            memory_dim=model_config.image.region_dim,
            bos_id=special("cls_token_id", "bos_token_id"),
            eos_id=special("sep_token_id", "eos_token_id"),
            pad_id=special("pad_token_id"),
            d_model=cfg.d_model,
            layers=cfg.layers,
            heads=cfg.heads,
            ff_dim=cfg.ff_dim,
            dropout=cfg.dropout,
            max_positions=cfg.max_positions,
        )
        config.validate()
        return config

    def make_plan(self, batches_per_epoch: int, total: int | None = None, seconds_per_step: float | None = None):
        """Steps and warm-up from the options and the data size (wenlan_cli/engine/budget.py)."""
        from wenlan_cli.durations import parse_duration

        cfg = self.cfg
        return build_plan(
            CAPTION_RULE, batches_per_epoch=batches_per_epoch, steps=cfg.steps, epochs=cfg.epochs, warmup=cfg.warmup,
            time_budget=parse_duration(cfg.time_budget) if cfg.time_budget is not None else None,
            total=total, seconds_per_step=seconds_per_step,
        )

    def announce_plan(self, plan, images: int) -> None:
        self.log(plan.describe(queue=False))
        for message in plan_warnings(plan, CAPTION_RULE, images=images, warmup_given=self.cfg.warmup is not None):
            if plan.source == "--time-budget" and plan.seconds_per_step is None and "is short for" in message:
                continue  # the provisional plan: judged once the speed is measured
            self.warn(message)

    def warn(self, message: str) -> None:
        if message not in self.warnings:
            self.warnings.append(message)
            self.log(f"[yellow]warning:[/yellow] {message}")

    def make_optimizer(self, model: CaptionModel):
        cfg = self.cfg
        groups = []
        for part, lr in ((model.head, cfg.lr), (model.image_encoder, cfg.tower_lr or cfg.lr / 2)):
            decay, no_decay, seen = [], [], set()
            for name, param in part.named_parameters():
                if not param.requires_grad or id(param) in seen:
                    continue
                seen.add(id(param))
                (decay if param.ndim >= 2 and "embed" not in name else no_decay).append(param)
            groups += [
                {"params": decay, "weight_decay": cfg.weight_decay, "lr": lr},
                {"params": no_decay, "weight_decay": 0.0, "lr": lr},
            ]
        groups = [g for g in groups if g["params"]]
        return adamw(groups, cfg.lr)

    # Tower features ---------------------------------------------------------------
    def cache_memory(self, model: CaptionModel, records, settings: ImageSettings, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Region sequences (N, R, D), masks (N, R) of the records whose images decode, and
        the indices of those records."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        chunks, masks, kept = [], [], []
        progress = Progress(
            TextColumn("image features"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
            console=self.console, transient=True, disable=not self.console.is_terminal,
        )
        model.eval()
        with progress, torch.no_grad():
            task = progress.add_task("features", total=len(records))
            for pixels, boxes, box_mask, indices, bad in image_loader(records, settings, self.cfg.eval_batch_size, self.workers, device):
                self.check_bad([message for _, message in bad])
                if pixels is not None:
                    images = normalize_images(pixels.to(device), settings.mean, settings.std)
                    chunks.append(model.encode(images, boxes.to(device), box_mask.to(device)))
                    masks.append(box_mask.to(device))
                    kept.extend(indices)
                progress.advance(task, len(indices) + len(bad))
        return torch.cat(chunks), torch.cat(masks), kept

    def check_bad(self, messages: list[str]) -> None:
        if messages and not self.cfg.skip_bad:
            raise DataError(f"{messages[0]} (pass --skip-bad to skip and count unreadable images)")
        self.skipped_images += len(messages)

    # The run ----------------------------------------------------------------------
    def run(self) -> FinetuneResult:
        from wenlan_cli.loading import load_checkpoint
        from wenlan_cli.engine.device import pick_device
        from wenlan_cli.engine.rng import seed_everything
        from wenlan_cli.engine.schedule import warmup_cosine

        cfg = self.cfg
        device = pick_device(cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {cfg.device} was asked for but no GPU is available.")
        mode, top_blocks = cfg.tower_mode()
        pretrain = load_checkpoint(cfg.checkpoint, device="cpu")
        pretrain_path = pretrain.path
        model_config = pretrain.config
        if cfg.image_size is not None:
            model_config = dataclasses.replace(model_config, image=dataclasses.replace(model_config.image, image_size=cfg.image_size))
        settings = ImageSettings.from_config(model_config.image)
        train_records, val_records = self.load_data()
        tokenizer = self.build_tokenizer(pretrain.tokenizer, train_records)
        head_config = self.head_config(tokenizer, model_config)

        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "metrics.jsonl").write_text("", encoding="utf-8")
        (self.out / "finetune_config.json").write_text(json.dumps(dataclasses.asdict(cfg), indent=2, ensure_ascii=False), encoding="utf-8")

        seed_everything(cfg.seed)
        model = CaptionModel(pretrain.model.image_encoder, head_config)
        del pretrain
        configure_tower(model, mode, top_blocks)
        model.to(device)
        frozen = tower_is_frozen(model)
        workers = cfg.workers if cfg.workers is not None else 0
        self.workers = workers

        # Tokenised per pair when a batch is made (in the DataLoader workers), not all up front.
        token_ids = CaptionTokens(train_records, tokenizer, head_config.max_positions)
        if cfg.cache_features and not frozen:
            raise UsageError("--cache-features needs a frozen tower (--freeze-tower).")
        memory = memory_mask = None
        region_bytes = len(train_records) * settings.max_regions * head_config.memory_dim * 4
        use_cache = frozen and (cfg.cache_features if cfg.cache_features is not None else region_bytes <= FEATURE_CACHE_LIMIT)
        if use_cache:
            self.log(f"Computing the frozen tower's region features of {len(train_records):,} training images once...")
            memory, memory_mask, kept = self.cache_memory(model, train_records, settings, device)
            if len(kept) < len(train_records):
                train_records = [train_records[i] for i in kept]
                token_ids = CaptionTokens(train_records, tokenizer, head_config.max_positions)

        caption_counts = [len(r.captions) for r in train_records]
        sampler = PairSampler(caption_counts, cfg.batch_size, seed=cfg.seed)
        self.plan = self.make_plan(sampler.batches_per_epoch)
        total = self.plan.total
        eval_every = cfg.eval_every if cfg.eval_every is not None else max(1, math.ceil(total / 4))
        optimizer = self.make_optimizer(model)
        # The schedule reads the plan at every step, so a time budget can set it after measuring.
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: warmup_cosine(s, self.plan.warmup, self.plan.total))
        batches = self.batches(sampler, train_records, token_ids, settings, memory, memory_mask, head_config.pad_id, device)
        decode = cfg.decode_options()
        tower_params = count_trainable(model.image_encoder)
        self.log(
            f"Fine-tuning a {head_config.layers}-layer caption decoder ({count_trainable(model.head):,} parameters) on "
            f"{model_config.name}'s image tower ({'frozen' if frozen else f'{tower_params:,} parameters trained'}) with "
            f"{len(train_records):,} images for {total:,} steps, batch {cfg.batch_size}, device {device}; "
            f"validating on {len(val_records):,} {cfg.eval_split} images every {eval_every or total} steps."
        )
        self.announce_plan(self.plan, len(train_records))

        self.best_cider = -math.inf
        self.best_scores: dict | None = None
        self.common_info = {
            "pretrain_checkpoint": str(pretrain_path.resolve()),
            "pretrain_step": read_step(pretrain_path),
            "tokenizer": "char-vocab" if cfg.char_vocab else "checkpoint",
            "tower": {"mode": mode, "top_blocks": top_blocks if mode == "top" else None},
            "decode": dataclasses.asdict(decode),
            "dataset": cfg.dataset,
            "eval_split": cfg.eval_split,
        }
        step, stop_reason = 0, None
        start = time.monotonic()
        model.train()
        model.image_encoder.eval()  # BatchNorm statistics and dropout of the tower stay fixed
        timer, watch = StepTimer(0, self.clock()), LossWatch()
        with TrainingProgress(total, self.console, label="finetune-caption", unit="captions/s") as progress:
            window_start, window_items = time.monotonic(), 0
            while step < total:
                images, ids, mask, size = next(batches)
                loss = self.train_step(model, images, ids, mask, optimizer)
                scheduler.step()
                step += 1
                window_items += size
                if not math.isfinite(loss):
                    raise TrainingError(f"the loss became {loss} at step {step}; training stopped (try a lower --lr).")
                seconds_per_step = timer.observe(step, self.clock())
                if seconds_per_step is not None:
                    if self.plan.source == "--time-budget":
                        planned = steps_in_budget(self.plan.time_budget, step=step, elapsed=self.clock() - timer.start_time, seconds_per_step=seconds_per_step)
                        self.plan = self.make_plan(sampler.batches_per_epoch, total=planned, seconds_per_step=seconds_per_step)
                        total = self.plan.total
                        eval_every = cfg.eval_every if cfg.eval_every is not None else max(1, math.ceil(total / 4))
                        progress.set_total(total)
                        self.log(f"Time budget: {seconds_per_step:.3f} s/step measured over the first steps.")
                        self.announce_plan(self.plan, len(train_records))
                    self.log(estimate_line(self.plan, step, seconds_per_step))
                stuck = watch.update(step, loss, total)
                if stuck:
                    self.warn(stuck)
                if step % cfg.log_every == 0 or step == total:
                    elapsed = time.monotonic() - window_start
                    rate = window_items / elapsed if elapsed > 0 else 0.0
                    lr = optimizer.param_groups[0]["lr"]
                    self.record({"step": step, "loss": round(loss, 6), "lr": lr, "captions_per_s": round(rate, 2),
                                 "skipped_images": self.skipped_images, "time": round(time.monotonic() - start, 2)})
                    progress.update(step, loss, lr, rate)
                    window_start, window_items = time.monotonic(), 0
                if eval_every and step % eval_every == 0 and step < total:
                    self.evaluate(model, tokenizer, model_config, val_records, settings, device, decode, step, meteor=False)
                    model.train()
                    model.image_encoder.eval()
                    window_start, window_items = time.monotonic(), 0  # the rate counts training only
                if cfg.max_time is not None and time.monotonic() - start >= cfg.max_time and step < total:
                    stop_reason = "max-time"
                    break
        final_scores = self.evaluate(model, tokenizer, model_config, val_records, settings, device, decode, step, meteor=cfg.meteor, final=True)
        final = save_run_checkpoint(self.out / "final", model, tokenizer, model_config, {**self.common_info, "step": step, "val_scores": final_scores}, self.metrics_lines)
        scores = self.best_scores
        (self.out / "scores.json").write_text(strict_json.dumps(scores, indent=2, ensure_ascii=False), encoding="utf-8")
        if stop_reason:
            self.log(f"Stopped ({stop_reason}) at step {step} of {total}.")
        return FinetuneResult(self.out, step, scores, self.out / "best", final, stop_reason)

    def batches(self, sampler, records, token_ids, settings, memory, memory_mask, pad_id, device):
        """Endless (images or cached memory, token ids, mask, size) batches in sampler order."""
        if memory is not None:
            pairs = iter(sampler)
            while True:
                chosen = [next(pairs) for _ in range(self.cfg.batch_size)]
                index = torch.tensor([i for i, _ in chosen], device=device)
                ids, mask = pad_token_ids([token_ids[i][c] for i, c in chosen], pad_id)
                yield (memory.index_select(0, index), memory_mask.index_select(0, index)), ids.to(device), mask.to(device), len(chosen)
        from torch.utils.data import DataLoader

        loader = DataLoader(
            PairDataset(records, token_ids, settings),
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            collate_fn=PairCollator(settings.max_regions, pad_id),
            num_workers=self.workers,
            persistent_workers=self.workers > 0,
            pin_memory=device.type == "cuda",
        )
        for batch in loader:
            self.check_bad([b.message for b in batch["bad"]])
            if batch["size"] == 0:
                continue
            images = (
                normalize_images(batch["images"].to(device), settings.mean, settings.std),
                batch["boxes"].to(device),
                batch["box_mask"].to(device),
            )
            yield images, batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["size"]

    def train_step(self, model: CaptionModel, inputs, ids: torch.Tensor, mask: torch.Tensor, optimizer) -> float:
        if len(inputs) == 2:  # cached region sequences
            memory, memory_mask = inputs
        else:
            images, boxes, memory_mask = inputs
            if tower_is_frozen(model):
                with torch.no_grad():
                    memory = model.encode(images, boxes, memory_mask)
            else:
                memory = model.encode(images, boxes, memory_mask)
        logits = model(memory, memory_mask, ids[:, :-1])
        targets = ids[:, 1:].masked_fill(mask[:, 1:] == 0, -100)
        loss = F.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
            ignore_index=-100, label_smoothing=self.cfg.label_smoothing,
        )
        loss.backward()
        if self.cfg.grad_clip:
            torch.nn.utils.clip_grad_norm_([p for g in optimizer.param_groups for p in g["params"]], self.cfg.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return float(loss.detach())

    def evaluate(self, model, tokenizer, model_config, records, settings, device, decode, step, *, meteor: bool, final: bool = False) -> dict:
        from .scoring import format_metrics, metrics_x100

        t0 = time.monotonic()
        output = caption_records(
            model, tokenizer, records, settings, device=device, options=decode,
            batch_size=self.cfg.eval_batch_size, workers=self.workers, skip_bad=self.cfg.skip_bad,
        )
        seconds_decode = time.monotonic() - t0
        result = score_split(output.captions, records, meteor=meteor)
        scores = {"step": step, "split": self.cfg.eval_split, **result}
        self.record({"step": step, "split": self.cfg.eval_split, **{k: round(v, 4) for k, v in metrics_x100(result).items()},
                     "decode_s": round(seconds_decode, 2), "score_s": result["seconds"].get("total")})
        for warning in result["warnings"]:
            self.log(f"[yellow]warning:[/yellow] {warning}")
        self.log(f"step {step}: {self.cfg.eval_split} {format_metrics(result)}")
        cider = result["metrics"]["CIDEr"]
        # The final validation re-scores with METEOR; keep it as the best when CIDEr ties.
        if cider > self.best_cider or (final and cider >= self.best_cider):
            self.best_cider = cider
            self.best_scores = scores
            save_run_checkpoint(
                self.out / "best", model, tokenizer, model_config,
                {**self.common_info, "step": step, "val_scores": scores}, self.metrics_lines,
            )
        elif final and self.best_scores is not None and "METEOR" not in self.best_scores["metrics"] and meteor:
            # An earlier step was better: re-score its captions with METEOR for the report.
            from .checkpoint import load_caption_checkpoint

            best = load_caption_checkpoint(self.out / "best", device=device)
            output = caption_records(
                best.model, best.tokenizer, records, best.settings, device=device, options=decode,
                batch_size=self.cfg.eval_batch_size, workers=self.workers, skip_bad=self.cfg.skip_bad,
            )
            result = score_split(output.captions, records, meteor=True)
            self.best_scores = {"step": self.best_scores["step"], "split": self.cfg.eval_split, **result}
            save_run_checkpoint(
                self.out / "best", best.model, best.tokenizer, best.model_config,
                {**self.common_info, "step": self.best_scores["step"], "val_scores": self.best_scores}, self.metrics_lines,
            )
        return scores


def save_run_checkpoint(target: Path, model, tokenizer, model_config, info: dict, metrics_lines) -> Path:
    from .checkpoint import save_caption_checkpoint

    return save_caption_checkpoint(target, model, tokenizer, model_config, info, list(metrics_lines))


def read_step(checkpoint: Path) -> int | None:
    from wenlan_cli.engine.checkpoint import read_checkpoint_info

    step = read_checkpoint_info(checkpoint).get("step")
    return step if isinstance(step, int) else None
