"""`wenlan finetune-caption`'s trainer: a caption decoder on BriVL's image tower.

Teacher forcing with label smoothing, AdamW with warm-up + cosine decay, periodic
validation scored with the official AIC-ICC protocol, the best checkpoint kept by CIDEr.
With the tower frozen, its region sequences are computed once for the training images
and training runs the decoder alone. The loop, logging, plan, stops and metrics are the
core's `Trainer` (through `wenlan_cli.plugin_api`); this module holds the model, the
batches, the step and the validation.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
import torch.nn.functional as F

from wenlan_cli.plugin_api import (
    CAPTION_RULE,
    CaptionTokens,
    DataError,
    ImageSettings,
    ImageTextRecord,
    ModelConfig,
    PairCollator,
    PairDataset,
    PairSampler,
    Trainer,
    UsageError,
    build_plan,
    make_optimizer,
    normalize_images,
    pad_token_ids,
    parse_duration,
    plan_warnings,
    seed_everything,
    strict_json,
)

from .config import FinetuneConfig
from .generate import caption_records, image_loader, score_split
from .model import CaptionModel, HeadConfig, configure_tower, count_trainable, tower_is_frozen

# Cache the frozen tower's region sequences when they take at most this many bytes.
FEATURE_CACHE_LIMIT = 4 * 2**30


@dataclass
class FinetuneResult:
    out: Path
    step: int
    scores: dict  # the best checkpoint's validation scores (score_split's result + "step")
    best: Path
    final: Path
    stopped_early: str | None = None


class CaptionBatch(NamedTuple):
    """One training batch: the tower's inputs (images, boxes, box mask) or, with cached
    features, its region sequences (memory, memory mask); caption token ids and mask."""

    inputs: tuple
    ids: torch.Tensor
    mask: torch.Tensor
    size: int


class CaptionFinetuner(Trainer):
    label, unit, rate_key = "finetune-caption", "captions/s", "captions_per_s"
    soft_wrap = True

    def __init__(self, cfg: FinetuneConfig, console=None) -> None:
        cfg.validate()
        super().__init__(cfg, console)
        self.workers = cfg.workers if cfg.workers is not None else 0
        self.decode = cfg.decode_options()
        self.pretrain_path: Path | None = None
        self.model_config: ModelConfig | None = None
        self.settings: ImageSettings | None = None
        self.train_records: list[ImageTextRecord] = []
        self.val_records: list[ImageTextRecord] = []
        self.tokenizer = None
        self.head: HeadConfig | None = None
        self.token_ids: CaptionTokens | None = None
        # The frozen tower's region sequences of the training images, when cached.
        self.memory: torch.Tensor | None = None
        self.memory_mask: torch.Tensor | None = None
        self.sampler: PairSampler | None = None
        self.shard_data = None  # --dataset webdataset: the training split, streamed from its shards
        self.best_cider = -math.inf
        self.best_scores: dict | None = None
        self.common_info: dict = {}  # what every checkpoint of the run says about it

    # Set-up -----------------------------------------------------------------------
    def build(self) -> None:
        cfg = self.cfg
        mode, top_blocks = self.open_device()
        pretrain = self.load_pretrain()
        self.train_records, self.val_records = self.load_data()
        self.tokenizer = self.build_tokenizer(pretrain.tokenizer, self.train_records)
        self.head = self.head_config(self.tokenizer, self.model_config)
        self.write_run_files()
        seed_everything(cfg.seed)
        self.model = CaptionModel(pretrain.model.image_encoder, self.head)
        del pretrain  # the text tower is not needed
        configure_tower(self.model, mode, top_blocks)
        self.model.to(self.ctx.device)
        self.prepare_batches()
        self.state.schedule(self.make_optimizer(self.model), self.make_plan(self.batches_per_epoch))
        self.describe_run(mode, top_blocks)
        self.model.train()
        self.model.image_encoder.eval()  # BatchNorm statistics and dropout of the tower stay fixed

    def open_device(self) -> tuple[str, int]:
        """The device (a world of one process) and the tower mode, checked before loading."""
        from wenlan_cli.plugin_api import pick_device

        device = pick_device(self.cfg.device)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"--device {self.cfg.device} was asked for but no GPU is available.")
        self.ctx = dataclasses.replace(self.ctx, device=device)
        return self.cfg.tower_mode()

    def load_pretrain(self):
        """The pretrain checkpoint (on the CPU), its model config at --image-size, and the
        image settings from it."""
        from wenlan_cli.plugin_api import load_checkpoint

        cfg = self.cfg
        pretrain = load_checkpoint(cfg.checkpoint, device="cpu")
        self.pretrain_path = pretrain.path
        model_config = pretrain.config
        if cfg.image_size is not None:
            model_config = dataclasses.replace(model_config, image=dataclasses.replace(model_config.image, image_size=cfg.image_size))
        self.model_config = model_config
        self.settings = ImageSettings.from_config(model_config.image)
        return pretrain

    def write_run_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out / "metrics.jsonl").write_text("", encoding="utf-8")
        text = json.dumps(dataclasses.asdict(self.cfg), indent=2, ensure_ascii=False)
        (self.out / "finetune_config.json").write_text(text, encoding="utf-8")

    def load_data(self) -> tuple[list[ImageTextRecord], list[ImageTextRecord]]:
        from wenlan_cli.plugin_api import ShardTrainData, load_records

        cfg = self.cfg
        options = {k: v for k, v in (("image_column", cfg.image_column), ("text_column", cfg.text_column)) if v}
        if cfg.dataset == "synth" and cfg.data_dir is None:
            self.log("[dim]Preparing the synthetic dataset (generated once, then cached)...[/dim]")
        if cfg.dataset == "webdataset":  # streamed: no record of the training split is held
            self.shard_data = ShardTrainData(cfg.data_dir, cfg.train_split)
        train = load_records(cfg.dataset, cfg.data_dir, cfg.train_split, **options) if self.shard_data is None else []
        val = load_records(cfg.dataset, cfg.data_dir, cfg.eval_split, **options)
        if not train and self.shard_data is None:
            raise DataError(f"the {cfg.train_split} split of {cfg.dataset} has no images.")
        if not val:
            raise DataError(f"the {cfg.eval_split} split of {cfg.dataset} has no images to validate on.")
        if train and not any(r.captions for r in train):
            raise DataError(f"the {cfg.train_split} split of {cfg.dataset} has no captions to learn from.")
        if any(not r.captions for r in val):
            empty = next(r.image_id for r in val if not r.captions)
            raise DataError(f"image {empty!r} of the {cfg.eval_split} split has no reference caption to score against.")
        return [r for r in train if r.captions], val

    def build_tokenizer(self, pretrain_tokenizer, train: list[ImageTextRecord]):
        from wenlan_cli.plugin_api import build_char_vocab, tokenizer_from_vocab

        if self.cfg.char_vocab and self.shard_data is not None:
            return tokenizer_from_vocab(self.shard_data.char_vocab())  # from the shards' index
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

    def prepare_batches(self) -> None:
        """Caption tokens (tokenised per pair when a batch is made, in the DataLoader workers),
        the frozen tower's features when cached, and the sampler."""
        cfg = self.cfg
        if self.shard_data is not None:  # streamed: tokenised per batch in the loader, nothing cached
            if cfg.cache_features:
                raise UsageError("--cache-features needs the training images in memory; --dataset webdataset streams them.")
            self.batches_per_epoch = self.shard_data.batches_per_epoch(cfg.batch_size)
            return
        frozen = tower_is_frozen(self.model)
        self.token_ids = CaptionTokens(self.train_records, self.tokenizer, self.head.max_positions)
        if cfg.cache_features and not frozen:
            raise UsageError("--cache-features needs a frozen tower (--freeze-tower).")
        region_bytes = len(self.train_records) * self.settings.max_regions * self.head.memory_dim * 4
        if frozen and (cfg.cache_features if cfg.cache_features is not None else region_bytes <= FEATURE_CACHE_LIMIT):
            self.log(f"Computing the frozen tower's region features of {len(self.train_records):,} training images once...")
            self.memory, self.memory_mask, kept = self.cache_memory(self.model, self.train_records, self.settings, self.ctx.device)
            if len(kept) < len(self.train_records):
                self.train_records = [self.train_records[i] for i in kept]
                self.token_ids = CaptionTokens(self.train_records, self.tokenizer, self.head.max_positions)
        self.sampler = PairSampler([len(r.captions) for r in self.train_records], cfg.batch_size, seed=cfg.seed)
        self.batches_per_epoch = self.sampler.batches_per_epoch

    def describe_run(self, mode: str, top_blocks: int) -> None:
        """The run's line and plan, and what its checkpoints record about it."""
        cfg, model, total = self.cfg, self.model, self.plan.total
        frozen = tower_is_frozen(model)
        tower = "frozen" if frozen else f"{count_trainable(model.image_encoder):,} parameters trained"
        self.log(
            f"Fine-tuning a {self.head.layers}-layer caption decoder ({count_trainable(model.head):,} parameters) on "
            f"{self.model_config.name}'s image tower ({tower}) with "
            f"{self.train_images:,} images for {total:,} steps, batch {cfg.batch_size}, device {self.ctx.device}; "
            f"validating on {len(self.val_records):,} {cfg.eval_split} images every {self.eval_every() or total} steps."
        )
        self.announce_plan()
        self.common_info = {
            "pretrain_checkpoint": str(self.pretrain_path.resolve()),
            "pretrain_step": read_step(self.pretrain_path),
            "tokenizer": "char-vocab" if cfg.char_vocab else "checkpoint",
            "tower": {"mode": mode, "top_blocks": top_blocks if mode == "top" else None},
            "decode": dataclasses.asdict(self.decode),
            "dataset": cfg.dataset,
            "eval_split": cfg.eval_split,
        }

    def make_plan(self, batches_per_epoch: int, total: int | None = None, seconds_per_step: float | None = None):
        """Steps and warm-up from the options and the data size (wenlan_cli/engine/budget.py)."""
        cfg = self.cfg
        return build_plan(
            CAPTION_RULE, batches_per_epoch=batches_per_epoch, steps=cfg.steps, epochs=cfg.epochs, warmup=cfg.warmup,
            time_budget=parse_duration(cfg.time_budget) if cfg.time_budget is not None else None,
            total=total, seconds_per_step=seconds_per_step,
        )

    def plan_warnings(self) -> list[str]:
        return plan_warnings(self.plan, CAPTION_RULE, images=self.train_images, warmup_given=self.cfg.warmup is not None)

    @property
    def train_images(self) -> int:
        return self.shard_data.images if self.shard_data is not None else len(self.train_records)

    def eval_every(self) -> int:
        """--eval-every, else four validations per run (of the plan as it stands)."""
        return self.cfg.eval_every if self.cfg.eval_every is not None else max(1, math.ceil(self.plan.total / 4))

    def non_finite_message(self, problem: str, step: int) -> str:
        return f"{problem} at step {step}; training stopped (try a lower --lr)."

    def make_optimizer(self, model: CaptionModel):
        """The decoder at --lr, the tower's trainable weights at --tower-lr (default lr / 2)."""
        cfg = self.cfg
        parts = [(model.head, cfg.lr), (model.image_encoder, cfg.tower_lr or cfg.lr / 2)]
        return make_optimizer(parts, lr=cfg.lr, weight_decay=cfg.weight_decay, no_decay=("embed",))

    # Tower features ---------------------------------------------------------------
    def cache_memory(self, model: CaptionModel, records, settings: ImageSettings, device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Region sequences (N, R, D), masks (N, R) of the records whose images decode, and
        the indices of those records."""
        from wenlan_cli.plugin_api import counting_progress

        chunks, masks, kept = [], [], []
        progress = counting_progress("image features", self.console, disable=not self.console.is_terminal)
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
        self.state.skipped_images += len(messages)

    # The loop's hooks -------------------------------------------------------------
    def batches(self):
        """Endless `CaptionBatch`es in sampler order."""
        return self.cached_batches() if self.memory is not None else self.loader_batches()

    def cached_batches(self):
        device, pairs = self.ctx.device, iter(self.sampler)
        while True:
            chosen = [next(pairs) for _ in range(self.cfg.batch_size)]
            index = torch.tensor([i for i, _ in chosen], device=device)
            ids, mask = pad_token_ids([self.token_ids[i][c] for i, c in chosen], self.head.pad_id)
            memory = (self.memory.index_select(0, index), self.memory_mask.index_select(0, index))
            yield CaptionBatch(memory, ids.to(device), mask.to(device), len(chosen))

    def loader_batches(self):
        from torch.utils.data import DataLoader

        device, settings = self.ctx.device, self.settings
        loader = self.shard_data.loader(
            self.tokenizer, self.head.max_positions, settings, batch_size=self.cfg.batch_size, seed=self.cfg.seed,
            start_batch=self.state.data_position, workers=self.workers, pin_memory=device.type == "cuda",
        ) if self.shard_data is not None else DataLoader(
            PairDataset(self.train_records, self.token_ids, settings),
            batch_size=self.cfg.batch_size,
            sampler=self.sampler,
            collate_fn=PairCollator(settings.max_regions, self.head.pad_id),
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
            yield CaptionBatch(images, batch["input_ids"].to(device), batch["attention_mask"].to(device), batch["size"])

    def train_step(self, batches) -> tuple[float, int]:
        batch = next(batches)
        return self.learn(batch.inputs, batch.ids, batch.mask), batch.size

    def learn(self, inputs: tuple, ids: torch.Tensor, mask: torch.Tensor) -> float:
        """One teacher-forced optimizer step of `self.model` on a batch; its loss."""
        model, optimizer = self.model, self.state.optimizer
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

    # Validation and checkpoints ---------------------------------------------------
    def evaluate(self, step: int, *, meteor: bool = False, final: bool = False) -> dict:
        """Caption and score the validation split; keep the best checkpoint by CIDEr.
        Periodic validations leave METEOR out (slow); the final one may add it."""
        result = self.validate(step, meteor)
        scores = {"step": step, "split": self.cfg.eval_split, **result}
        cider = result["metrics"]["CIDEr"]
        # The final validation re-scores with METEOR; keep it as the best when CIDEr ties.
        if cider > self.best_cider or (final and cider >= self.best_cider):
            self.best_cider = cider
            self.best_scores = scores
            self.write_captioner("best", {**self.common_info, "step": step, "val_scores": scores})
        elif final and self.best_scores is not None and "METEOR" not in self.best_scores["metrics"] and meteor:
            self.rescore_best()
        if not final:
            self.model.train()
            self.model.image_encoder.eval()
        return scores

    def validate(self, step: int, meteor: bool) -> dict:
        """score_split's result for this step's captions of the validation split, recorded and printed."""
        from .scoring import format_metrics, metrics_x100

        cfg = self.cfg
        t0 = time.monotonic()
        output = caption_records(
            self.model, self.tokenizer, self.val_records, self.settings, device=self.ctx.device, options=self.decode,
            batch_size=cfg.eval_batch_size, workers=self.workers, skip_bad=cfg.skip_bad,
        )
        seconds_decode = time.monotonic() - t0
        result = score_split(output.captions, self.val_records, meteor=meteor)
        self.record({"step": step, "split": cfg.eval_split, **{k: round(v, 4) for k, v in metrics_x100(result).items()},
                     "decode_s": round(seconds_decode, 2), "score_s": result["seconds"].get("total")})
        for warning in result["warnings"]:
            self.log(f"[yellow]warning:[/yellow] {warning}")
        self.log(f"step {step}: {cfg.eval_split} {format_metrics(result)}")
        return result

    def rescore_best(self) -> None:
        """An earlier step was better: re-score its captions with METEOR for the report."""
        from .checkpoint import load_caption_checkpoint

        cfg = self.cfg
        best = load_caption_checkpoint(self.out / "best", device=self.ctx.device)
        output = caption_records(
            best.model, best.tokenizer, self.val_records, best.settings, device=self.ctx.device, options=self.decode,
            batch_size=cfg.eval_batch_size, workers=self.workers, skip_bad=cfg.skip_bad,
        )
        result = score_split(output.captions, self.val_records, meteor=True)
        step = self.best_scores["step"]
        self.best_scores = {"step": step, "split": cfg.eval_split, **result}
        self.write_captioner("best", {**self.common_info, "step": step, "val_scores": self.best_scores}, best)

    def write_captioner(self, name: str, info: dict, loaded=None) -> Path:
        """A caption checkpoint `name` in the run directory: this run's model, or `loaded`'s."""
        from .checkpoint import save_caption_checkpoint

        source = self if loaded is None else loaded
        return save_caption_checkpoint(
            self.out / name, source.model, source.tokenizer, source.model_config, info, list(self.metrics_lines)
        )

    def finish(self, stopped: str | None) -> FinetuneResult:
        """The final validation (with METEOR unless --no-meteor), final/, scores.json."""
        step = self.state.step
        final_scores = self.evaluate(step, meteor=self.cfg.meteor, final=True)
        final = self.write_captioner("final", {**self.common_info, "step": step, "val_scores": final_scores})
        scores = self.best_scores
        (self.out / "scores.json").write_text(strict_json.dumps(scores, indent=2, ensure_ascii=False), encoding="utf-8")
        if stopped:
            self.log(f"Stopped ({stopped}) at step {step} of {self.plan.total}.")
        return FinetuneResult(self.out, step, scores, self.out / "best", final, stopped)


def read_step(checkpoint: Path) -> int | None:
    from wenlan_cli.plugin_api import read_checkpoint_info

    step = read_checkpoint_info(checkpoint).get("step")
    return step if isinstance(step, int) else None
