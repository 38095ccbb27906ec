"""wenlan against open_clip: the same data, towers of the same size, side by side.

    .venv/bin/pip install -c constraints.txt open_clip_torch   # or: pip install -e '.[bench]'
    python benchmarks/vs_open_clip.py [--batch-size 64] [--steps 50] [--rounds 2] [--budget-s 150]
    python benchmarks/vs_open_clip.py --quick            # a smoke run: tiny data, a few steps

Three trainers on the synthetic dataset on disk (the default cached one, or `--data-dir`):

* wenlan `--loss clip`  (brivl-tiny, in-batch InfoNCE, no momentum towers),
* wenlan `--loss moco`  (brivl-tiny, momentum towers + queues, the default),
* open_clip             (its own `CustomTextCLIP`, `ClipLoss`, train/val image transforms,
                         HF tokenizer and an open_clip-style loop with AdamW).

Phase 1, throughput: every trainer runs `--steps` optimizer steps, `--rounds` times, in
the order clip, open_clip, moco, clip, open_clip, moco, ... so machine noise hits all
alike. pairs/s = pairs of the steps after the first `--warm-steps` / their wall time,
data loading included (each side with its own DataLoader and the same worker count);
the median over rounds is reported. wenlan is measured through `Pretrainer.run()`
itself (what `wenlan pretrain` runs), from the `time` stamps of its metrics.jsonl.

Phase 2, recall at equal wall-clock: every trainer trains from scratch for
`--budget-s` seconds of its training loop (wenlan: `max_time`; its start-up, data
indexing and tokenisation are outside the budget for both sides). The warm-up + cosine
schedule of each run spans the steps that trainer is expected to reach in the budget
(budget x its phase-1 pairs/s / batch), so every run ends its schedule near the end of
the budget. Then the mean of the six R@K on the val split, from each model's embeddings
through wenlan's `retrieval_metrics` (wenlan: the checkpoint its run wrote, evaluated
with `evaluate_retrieval`, as `wenlan eval-retrieval` does).

Prints ONE JSON line: all figures, both sides' exact configurations, the targets
(wenlan clip pairs/s >= open_clip's; moco pairs/s >= 0.8 x open_clip's; moco val mean
recall > open_clip's at equal wall-clock) and which were met.

What is the same on both sides
------------------------------
* Data: the same records; the same (image, caption) pairs in the same order (wenlan's
  seeded `PairSampler` drives both DataLoaders); the same worker count and batch size.
* Image backbone: the same timm model (brivl-tiny's `test_efficientnet`) with the same
  timm keyword arguments (`output_stride=16`; open_clip's `TimmModel` has no way to pass
  them, so its trunk is rebuilt with them — the only change made to open_clip's model),
  the same input size (96 px) and normalisation mean/std.
* Text backbone: a BERT of brivl-tiny's size (2 layers, 128 wide, 4 heads), randomly
  initialised, saved by this script to a local directory with a character vocabulary
  built from the training captions exactly as wenlan builds its own (`build_char_vocab`),
  which open_clip loads through `hf_model_name` / `hf_tokenizer_name`. Nothing comes
  from a hub.
* Joint space 256-d; AdamW (betas 0.9/0.98, eps 1e-6), the same peak lr, weight decay,
  linear warm-up + cosine schedule (wenlan's `warmup_cosine`), gradient clipping at 1.0.

What differs (each side's own design)
-------------------------------------
* Towers' heads: wenlan pools one vector per region box (roi_align over the whole image
  + the data's boxes, up to 10), adds a box-geometry embedding, runs a 2-layer
  Transformer over the regions and a 2-layer MLP; its text side runs a 1-layer
  Transformer over BERT's states and a 2-layer MLP. open_clip global-average-pools the
  CNN map into a linear projection, and mean-pools BERT's states into its 2-layer MLP
  projection. So wenlan's towers hold somewhat more parameters and compute on top of
  the same backbones (both counts are in the JSON).
* Temperature: wenlan's is fixed (0.07); open_clip learns `logit_scale` (starts at
  1/0.07, clamped at 100).
* Loss: wenlan moco is a sum of two directions against queues; clip and open_clip's
  ClipLoss are the mean of two in-batch directions.
* Images: wenlan resizes (no augmentation); open_clip's train transform is its
  RandomResizedCrop (scale 0.9-1.0, bicubic), its val transform resize + centre crop.
* Text: wenlan tokenises once up front and pads each batch to its longest caption;
  open_clip's tokenizer runs per item in the Dataset and pads to a fixed context
  length — here the longest tokenised training caption (at most wenlan's max_length),
  the shortest that truncates nothing, i.e. open_clip's best case.
* Weight decay groups: wenlan exempts biases, norms and embedding tables; open_clip's
  rule exempts 1-d params, biases, norms and logit_scale.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import (  # noqa: E402
    evaluate_checkpoint,
    load_split,
    rate_from_log,
    run_wenlan,
    short_metrics,
    synth_options,
    work_dir,
)

INSTALL_HINT = (
    "open_clip is not installed; it is a benchmark-only extra: "
    "`.venv/bin/pip install -c constraints.txt open_clip_torch` (or `pip install -e '.[bench]'`)."
)
OC_MODEL_NAME = "wenlan-bench-brivl-tiny-size"


def import_open_clip():
    try:
        import open_clip
    except ImportError:
        print(INSTALL_HINT, file=sys.stderr)
        raise SystemExit(2)
    return open_clip


# ----------------------------------------------------------------------------- open_clip side


def write_text_tower(directory: Path, train_records, bert_config: dict, max_length: int) -> int:
    """A randomly initialised BERT of brivl-tiny's text size + wenlan's character
    tokenizer, saved where open_clip's `hf_model_name` / `hf_tokenizer_name` point.
    Returns the context length open_clip will use (the longest training caption)."""
    from transformers import BertConfig, BertModel

    from wenlan_cli.data.pipeline import tokenize_all
    from wenlan_cli.models.tokenizer import build_char_vocab, save_tokenizer, tokenizer_from_vocab

    captions = [c for r in train_records for c in r.captions]
    tokenizer = tokenizer_from_vocab(build_char_vocab(captions))
    config = BertConfig(**{**bert_config, "vocab_size": len(tokenizer), "pad_token_id": tokenizer.pad_token_id or 0})
    BertModel(config, add_pooling_layer=False).save_pretrained(str(directory))
    save_tokenizer(tokenizer, directory)
    longest = max(len(ids) for ids in tokenize_all(tokenizer, captions, max_length))
    return min(longest, max_length)


def open_clip_config(text_dir: Path, wenlan_config, context_length: int) -> dict:
    image = wenlan_config.image
    return {
        "embed_dim": wenlan_config.embed_dim,
        "vision_cfg": {
            "image_size": image.image_size,
            "timm_model_name": image.backbone,
            "timm_model_pretrained": False,
            "timm_pool": "avg",
            "timm_proj": "linear",
        },
        "text_cfg": {
            "hf_model_name": str(text_dir),
            "hf_tokenizer_name": str(text_dir),
            "hf_proj_type": "mlp",
            "hf_pooler_type": "mean_pooler",
            "context_length": context_length,
        },
    }


def create_open_clip(open_clip, wenlan_config, device, seed: int):
    import timm

    torch.manual_seed(seed)
    image = wenlan_config.image
    model, preprocess_train, preprocess_val = open_clip.create_model_and_transforms(
        OC_MODEL_NAME, pretrained=None, device=device, output_dict=True,
        image_mean=tuple(image.mean), image_std=tuple(image.std),
        pretrained_text=True,  # the local, randomly initialised BERT saved above
    )
    if image.backbone_kwargs:
        # open_clip cannot pass timm kwargs (output_stride); rebuild the trunk as its
        # TimmModel would, with them, so both image backbones do the same work.
        trunk = timm.create_model(image.backbone, pretrained=False, **image.backbone_kwargs)
        trunk.reset_classifier(0, global_pool="avg")
        model.visual.trunk = trunk.to(device)
    tokenizer = open_clip.get_tokenizer(OC_MODEL_NAME)
    return model, preprocess_train, preprocess_val, tokenizer


class OpenClipPairs(torch.utils.data.Dataset):
    """open_clip's CsvDataset style: open the image, apply its transform, tokenise the
    caption, per item. Keys are wenlan's (record, caption) pairs."""

    def __init__(self, records, transform, tokenizer) -> None:
        self.records = records
        self.transform = transform
        self.tokenizer = tokenizer

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key):
        from PIL import Image

        index, caption = key
        record = self.records[index]
        image = self.transform(Image.open(str(record.image_path)).convert("RGB"))
        text = self.tokenizer([str(record.captions[caption])])[0]
        return image, text


def open_clip_optimizer(model, lr: float, weight_decay: float):
    """AdamW with open_clip's usual grouping: no decay for gains, biases, norms, logit_scale."""
    def exempt(name, p):
        return p.ndim < 2 or "bn" in name or "ln" in name or "bias" in name or "logit_scale" in name

    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in named if exempt(n, p)], "weight_decay": 0.0},
        {"params": [p for n, p in named if not exempt(n, p)], "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)


def train_open_clip(open_clip, wenlan_config, train_records, args, *, steps: int, max_time: float | None,
                    warm_steps: int, seed: int):
    """open_clip-style loop: lr schedule, zero_grad, forward, ClipLoss, backward, clip,
    step, clamp logit_scale. Returns timing and the trained model (+ its val transform)."""
    from torch.utils.data import DataLoader

    from wenlan_cli.data.pipeline import PairSampler
    from wenlan_cli.engine.schedule import warmup_cosine_scheduler

    device = torch.device(args.device)
    model, preprocess_train, preprocess_val, tokenizer = create_open_clip(open_clip, wenlan_config, device, seed)
    sampler = PairSampler([len(r.captions) for r in train_records], args.batch_size, seed=seed)
    loader = DataLoader(
        OpenClipPairs(train_records, preprocess_train, tokenizer),
        batch_size=args.batch_size, sampler=sampler, num_workers=args.workers,
        pin_memory=device.type == "cuda", persistent_workers=args.workers > 0,
    )
    optimizer = open_clip_optimizer(model, args.lr, args.weight_decay)
    scheduler = warmup_cosine_scheduler(optimizer, min(args.warmup, max(0, steps - 1)), steps)
    loss_fn = open_clip.ClipLoss()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=args.precision == "bf16")
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    model.train()
    stamps = {}
    start = time.monotonic()
    batches = iter(loader)
    step, loss = 0, None
    while step < steps:
        images, texts = next(batches)
        images = images.to(device, non_blocking=True)
        texts = texts.to(device, non_blocking=True)
        optimizer.zero_grad(set_to_none=True)
        with autocast:
            out = model(images, texts)
            loss = loss_fn(out["image_features"], out["text_features"], out["logit_scale"])
        loss.backward()
        if args.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        scheduler.step()
        with torch.no_grad():
            model.logit_scale.clamp_(0, math.log(100))
        step += 1
        if step in (warm_steps, steps) or max_time is not None:
            sync()
            stamps[step] = time.monotonic() - start
        if max_time is not None and stamps[step] >= max_time:
            break
    final_loss = float(loss.detach()) if loss is not None else float("nan")
    timing = {
        "steps": step,
        "loop_s": stamps[step],
        "final_loss": final_loss,
        "logit_scale": round(float(model.logit_scale.detach().exp()), 3),
    }
    if warm_steps in stamps and step > warm_steps:
        seconds = stamps[step] - stamps[warm_steps]
        timing.update(pairs_per_s=(step - warm_steps) * args.batch_size / seconds, timed_steps=step - warm_steps, timed_s=seconds)
    return timing, model, preprocess_val, tokenizer


@torch.no_grad()
def evaluate_open_clip(model, preprocess_val, tokenizer, records, device, batch_size: int = 128) -> dict:
    """Val recall from open_clip's own embeddings, through wenlan's `retrieval_metrics`."""
    from PIL import Image

    from wenlan_cli.eval.evaluate import caption_table
    from wenlan_cli.eval.retrieval import retrieval_metrics

    model.eval()
    device = torch.device(device)
    images = []
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        pixels = torch.stack([preprocess_val(Image.open(str(r.image_path)).convert("RGB")) for r in chunk]).to(device)
        images.append(model.encode_image(pixels, normalize=True).float().cpu())
    texts, owners = caption_table(records)
    text_emb = []
    for start in range(0, len(texts), 2 * batch_size):
        ids = tokenizer(texts[start : start + 2 * batch_size]).to(device)
        text_emb.append(model.encode_text(ids, normalize=True).float().cpu())
    return retrieval_metrics(torch.cat(images), torch.cat(text_emb), owners)


# ----------------------------------------------------------------------------- the runs


def wenlan_options(args, loss: str, steps: int, max_time: float | None, log_every: int) -> dict:
    options = dict(
        model="brivl-tiny", dataset="synth", data_dir=args.data_dir, steps=steps, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, grad_clip=args.grad_clip, loss=loss,
        seed=args.seed, device=args.device, workers=args.workers, log_every=log_every, max_time=max_time,
        precision=args.precision, keep=1, queue_warmup=args.queue_warmup if loss == "moco" else 0,
    )
    if args.data_dir is None:
        options.update(synth_train=args.synth_train, synth_val=args.synth_val, synth_test=args.synth_test)
    return options


def count_params(module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", help="the synthetic dataset's folder (AIC-ICC layout); default: the cached one")
    parser.add_argument("--synth-train", type=int, default=10000)
    parser.add_argument("--synth-val", type=int, default=1000)
    parser.add_argument("--synth-test", type=int, default=1000)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=50, help="steps per throughput round")
    parser.add_argument("--warm-steps", type=int, default=10, help="first steps of a round left out of its timing")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--budget-s", type=float, default=150.0, help="training-loop seconds of each recall run")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--grad-clip", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: wenlan's default)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--queue-warmup", type=int, default=0,
                        help="wenlan moco: in-batch loss for the first N steps (`wenlan pretrain --queue-warmup`)")
    parser.add_argument("--skip-recall", action="store_true", help="throughput phase only")
    parser.add_argument("--keep", help="keep the runs in this folder instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="smoke run: tiny data, a few steps, 8 s budgets")
    args = parser.parse_args()
    if args.quick:
        args.synth_train, args.synth_val, args.synth_test = 400, 60, 60
        args.batch_size, args.steps, args.warm_steps, args.rounds = 16, 8, 3, 1
        args.budget_s, args.warmup = 8.0, 5
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    from wenlan_cli.train.loop import default_workers

    if args.workers is None:
        args.workers = default_workers()
    if args.steps <= args.warm_steps:
        parser.error("--steps must exceed --warm-steps")
    return args


SIDES = ("wenlan_clip", "open_clip", "wenlan_moco")


def measure_throughput(open_clip, wenlan_config, train_records, work: Path, args) -> dict:
    """Phase 1: pairs/s of every side, rounds interleaved so machine noise hits all alike."""
    rounds = {s: [] for s in SIDES}
    for r in range(args.rounds):
        for side in SIDES:
            if side == "open_clip":
                timing, *_ = train_open_clip(open_clip, wenlan_config, train_records, args, steps=args.steps,
                                             max_time=None, warm_steps=args.warm_steps, seed=args.seed)
            else:
                loss = side.split("_")[1]
                run = run_wenlan(work, f"tp-{side}-{r}", **wenlan_options(args, loss, args.steps, None, args.warm_steps))
                timing = rate_from_log(run["train_log"], args.batch_size, args.warm_steps)
            rounds[side].append(round(timing["pairs_per_s"], 2))
    return {s: {"pairs_per_s": round(statistics.median(v), 2), "rounds": v} for s, v in rounds.items()}


def train_side_on_budget(side: str, planned: int, log_every: int, open_clip, wenlan_config, train_records,
                         val_records, work: Path, args) -> tuple[dict, dict, int]:
    """One side trained from scratch for `--budget-s` seconds: its timing, its val
    metrics and its trainable parameter count."""
    if side == "open_clip":
        timing, model, preprocess_val, tokenizer = train_open_clip(
            open_clip, wenlan_config, train_records, args, steps=planned, max_time=args.budget_s,
            warm_steps=log_every, seed=args.seed)
        metrics = evaluate_open_clip(model, preprocess_val, tokenizer, val_records, args.device)
        return timing, metrics, count_params(model)
    loss = side.split("_")[1]
    run = run_wenlan(work, f"budget-{side}", **wenlan_options(args, loss, planned, args.budget_s, log_every))
    timing = {"steps": run["steps"], "stopped_early": run["stopped_early"]}
    try:
        timing.update(rate_from_log(run["train_log"], args.batch_size, log_every))
    except RuntimeError:
        pass
    metrics = evaluate_checkpoint(run["checkpoint"], val_records, args.device)
    from wenlan_cli.loading import load_checkpoint

    loaded = load_checkpoint(run["checkpoint"])
    return timing, metrics, count_params(loaded.model)


def measure_recall(throughput: dict, open_clip, wenlan_config, train_records, val_records, work: Path,
                   args) -> tuple[dict, dict]:
    """Phase 2: val recall of every side after the same wall-clock budget, each schedule
    sized to the steps that side reaches in the budget at its phase-1 rate."""
    budget, params = {}, {}
    for side in SIDES:
        planned = max(2, round(args.budget_s * throughput[side]["pairs_per_s"] / args.batch_size))
        log_every = max(1, min(10, planned // 10))
        timing, metrics, params[side] = train_side_on_budget(side, planned, log_every, open_clip, wenlan_config,
                                                             train_records, val_records, work, args)
        budget[side] = {
            "schedule_steps": planned,
            "steps_done": timing["steps"],
            "train_loop_s": round(timing.get("loop_s", float("nan")), 1),
            "pairs_per_s_in_run": round(timing["pairs_per_s"], 2) if "pairs_per_s" in timing else None,
            "final_loss": timing.get("final_loss"),
            "val": short_metrics(metrics),
        }
        if "logit_scale" in timing:
            budget[side]["learned_logit_scale"] = timing["logit_scale"]
    return budget, params


def judge(throughput: dict, budget: dict) -> dict:
    """The targets: throughput ratios against open_clip, and moco's recall against it."""
    oc_rate = throughput["open_clip"]["pairs_per_s"]
    clip_ratio = throughput["wenlan_clip"]["pairs_per_s"] / oc_rate
    moco_ratio = throughput["wenlan_moco"]["pairs_per_s"] / oc_rate
    targets = {
        "clip_pairs_per_s_vs_open_clip": {"ratio": round(clip_ratio, 3), "target": ">= 1.0", "met": clip_ratio >= 1.0},
        "moco_pairs_per_s_vs_open_clip": {"ratio": round(moco_ratio, 3), "target": ">= 0.8", "met": moco_ratio >= 0.8},
    }
    if budget:
        moco_r = budget["wenlan_moco"]["val"]["mean_recall"]
        oc_r = budget["open_clip"]["val"]["mean_recall"]
        targets["moco_recall_vs_open_clip"] = {
            "moco_mean_recall": moco_r, "open_clip_mean_recall": oc_r,
            "clip_mean_recall": budget["wenlan_clip"]["val"]["mean_recall"],
            "target": "moco > open_clip", "met": moco_r > oc_r,
        }
    return targets


def configurations(args, wenlan_config, oc_config: dict, train_records, val_records) -> dict:
    """Both sides' exact configurations, as printed in the JSON line."""
    from wenlan_cli.config import to_dict

    shared = {
        "data": args.data_dir or f"synthetic train{args.synth_train}/val{args.synth_val} (cached)",
        "train_images": len(train_records), "val_images": len(val_records),
        "batch_size": args.batch_size, "throughput_steps": args.steps, "warm_steps": args.warm_steps,
        "rounds": args.rounds, "budget_s": args.budget_s, "workers": args.workers, "device": args.device,
        "precision": args.precision, "lr": args.lr, "weight_decay": args.weight_decay, "warmup": args.warmup,
        "schedule": "linear warm-up + cosine to 1% (wenlan_cli.engine.schedule.warmup_cosine)",
        "grad_clip": args.grad_clip, "optimizer": "AdamW betas (0.9, 0.98) eps 1e-6", "seed": args.seed,
    }
    return {
        "shared": shared,
        "wenlan": {"model": to_dict(wenlan_config), "losses": ["clip", "moco"], "moco_queue_warmup": args.queue_warmup},
        "open_clip": {
            "model_cfg": {**oc_config, "text_cfg": {**oc_config["text_cfg"], "hf_model_name": "<local random-init BERT>",
                                                    "hf_tokenizer_name": "<wenlan char vocab>"}},
            "timm_trunk_kwargs": wenlan_config.image.backbone_kwargs,
            "text_bert_config": wenlan_config.text.bert_config,
            "loss": "open_clip.ClipLoss (learned logit_scale, clamped to 100)",
            "train_transform": "open_clip image_transform(is_train=True): RandomResizedCrop(scale 0.9-1), bicubic",
        },
    }


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    open_clip = import_open_clip()

    from wenlan_cli.models.registry import get_model_config

    wenlan_config = get_model_config("brivl-tiny")
    synth = synth_options(args.synth_train, args.synth_val, args.synth_test)
    train_records = load_split(args.data_dir, "train", synth)
    val_records = load_split(args.data_dir, "val", synth)

    with work_dir(args.keep, "wenlan-vs-open-clip-") as work:
        text_dir = work / "oc_text_tower"
        text_dir.mkdir(exist_ok=True)
        context = write_text_tower(text_dir, train_records, wenlan_config.text.bert_config, wenlan_config.text.max_length)
        oc_config = open_clip_config(text_dir, wenlan_config, context)
        (work / f"{OC_MODEL_NAME}.json").write_text(json.dumps(oc_config, indent=2), encoding="utf-8")
        open_clip.add_model_config(work / f"{OC_MODEL_NAME}.json")
        throughput = measure_throughput(open_clip, wenlan_config, train_records, work, args)
        budget, params = {}, {}
        if not args.skip_recall:
            budget, params = measure_recall(throughput, open_clip, wenlan_config, train_records, val_records, work, args)

    targets = judge(throughput, budget)
    print(json.dumps({
        "benchmark": "vs_open_clip",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "open_clip_version": open_clip.__version__,
        "throughput": throughput,
        "recall_at_equal_wall_clock": budget or None,
        "trainable_params": params or None,
        "targets": targets,
        "met": all(t["met"] for t in targets.values()),
        "config": configurations(args, wenlan_config, oc_config, train_records, val_records),
    }, ensure_ascii=False))

if __name__ == "__main__":
    main()
