"""Queue vs in-batch negatives, the WenLan paper's claim: does `--loss moco` beat `--loss clip`?

    python benchmarks/queue_vs_inbatch.py                      # batch 16 and 32, 3 seeds, both losses
    python benchmarks/queue_vs_inbatch.py --quick              # smoke run
    python benchmarks/queue_vs_inbatch.py --losses moco --queue-size 256 --temperature 0.05
    python benchmarks/queue_vs_inbatch.py --losses moco --queue-init empty --in-batch-negatives

brivl-tiny on a small synthetic dataset (`--synth-train`/`--synth-val`, cached like the
default one), trained from scratch through `Pretrainer.run()` (what `wenlan pretrain`
runs) for the same number of steps with each loss, at each batch size and seed. Each run's
final checkpoint is evaluated on the val split (every caption a query; mean of the six
R@K, `wenlan eval-retrieval`'s figures). Prints ONE JSON line: every run, mean ± std per
(batch, loss), the paired moco - clip difference per seed, which loss wins at each batch
size, and diagnostics of the queue (how many steps it holds random initial vectors, how
many epochs the run sees, and how many of a query's queued negatives are its own image
or a scene with exactly the same attributes — false negatives). Per run it also reports
how far the val embeddings collapse onto one direction (`*_mean_vector_norm`: the norm of
the mean unit vector, ~0 spread out, 1 all identical) and, for moco, the mean cosine of
the newest queued keys with each other and with the oldest queued keys (`queue_drift`):
a collapsed embedding that rotates over time lets the loss tell the current (positive)
key from the queued ones by age instead of content.

Both losses share everything else: model, data order (the seed's `PairSampler`), lr,
warm-up, schedule, weight decay, grad clipping, temperature (`--temperature` overrides
the model's 0.07 for both). moco adds momentum towers (`--momentum`) and two queues
(`--queue-size`, a multiple of every batch size).

Queue variants (benchmark-only; they swap the loss function `BriVL.forward` calls for
the length of one run and never change wenlan_cli's files):
  --queue-init empty     negatives are only the queue slots already written (the queue
                         is masked until it has wrapped) instead of random unit vectors.
  --in-batch-negatives   the batch's own momentum keys are negatives too (ALBEF-style:
                         logits against [keys of this batch, queue]).
  --queue-warmup N       (as `wenlan pretrain --queue-warmup N`) the first N steps use the in-batch loss on the query towers
                         (as `--loss clip`, summed over the two directions) while the
                         queue fills with momentum keys; then the queue loss.
With `--mask-false-negatives` (off by default) the variants apply wenlan's false-negative
mask as `brivl_loss` does; `benchmarks/false_negatives.py` measures the mask itself.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

from _common import (  # noqa: E402
    evaluate_checkpoint,
    load_split,
    mean_std,
    moco_vs_clip,
    queue_drift,
    run_wenlan,
    short_metrics,
    synth_options,
    work_dir,
)


class QueueLossVariant:
    """A drop-in for `wenlan_cli.models.loss.brivl_loss` (same arguments) that can mask the
    unwritten queue slots, add in-batch negatives, or use the in-batch loss for the first
    steps. Counts its calls: one per optimizer step (no gradient accumulation here)."""

    def __init__(self, queue_size: int, batch_size: int, *, queue_init: str, in_batch: bool, warmup_steps: int) -> None:
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.queue_init = queue_init
        self.in_batch = in_batch
        self.warmup_steps = warmup_steps
        self.calls = 0

    def direction(self, query, own_keys, queue, exclude=None) -> tuple[torch.Tensor, torch.Tensor]:
        target_index = torch.arange(query.shape[0], device=query.device)
        negatives = query @ queue.t()
        if exclude is not None:  # the false-negative mask wenlan's loss applies (--mask-false-negatives)
            negatives = negatives.masked_fill(exclude, float("-inf"))
        if self.in_batch:
            logits = torch.cat([query @ own_keys.t(), negatives], dim=1)
            return logits, target_index
        positive = (query * own_keys).sum(-1, keepdim=True)
        logits = torch.cat([positive, negatives], dim=1)
        return logits, torch.zeros_like(target_index)

    def __call__(self, image_query, text_query, image_key, text_key, image_queue, text_queue, temperature,
                 image_queue_exclude=None, text_queue_exclude=None):
        step = self.calls
        self.calls += 1
        if step < self.warmup_steps:
            logits = image_query @ text_query.t() / temperature
            target = torch.arange(logits.shape[0], device=logits.device)
            return F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)
        if self.queue_init == "empty":
            filled = min(step * self.batch_size, self.queue_size)
            image_queue, text_queue = image_queue[:filled], text_queue[:filled]
            if image_queue_exclude is not None:
                image_queue_exclude, text_queue_exclude = image_queue_exclude[:, :filled], text_queue_exclude[:, :filled]
        loss = 0.0
        for query, keys, queue, exclude in (
            (image_query, text_key, text_queue, text_queue_exclude),
            (text_query, image_key, image_queue, image_queue_exclude),
        ):
            logits, target = self.direction(query, keys, queue, exclude)
            loss = loss + F.cross_entropy(logits / temperature, target)
        return loss


class patched_loss:
    """Swap the loss `BriVL.forward` calls for the duration of a `with` block."""

    def __init__(self, variant) -> None:
        self.variant = variant

    def __enter__(self):
        import wenlan_cli.models.brivl as brivl_module

        self.module = brivl_module
        self.original = brivl_module.brivl_loss
        if self.variant is not None:
            brivl_module.brivl_loss = self.variant
        return self

    def __exit__(self, *exc):
        self.module.brivl_loss = self.original
        return False


# ----------------------------------------------------------------------------- diagnostics


def train_scene_keys(synth: dict, records) -> list | None:
    """The attribute set of every synthetic train image, regenerated with the generator's
    own functions in its order; None when that cannot be confirmed against the captions
    (e.g. the generator changed), and the same-scene figures are then left out."""
    from wenlan_cli.data import synthetic

    def stream(rng):
        if hasattr(synthetic, "scene_stream"):
            yield from synthetic.scene_stream(rng)
        else:
            while True:
                yield synthetic.sample_scene(rng)

    key = synthetic._scene_key
    rng = random.Random(synth["seed"])
    val = synthetic.generate_split(synth["val"], rng)
    test = synthetic.generate_split(synth["test"], rng, taken={key(s) for s in val})
    held_out = {key(s) for s in val + test}
    scenes = []
    for scene in stream(rng):
        if len(scenes) == synth["train"]:
            break
        if key(scene) not in held_out:
            scenes.append(scene)
    if len(scenes) != len(records):
        return None
    for scene, record in zip(scenes[:200], records[:200]):  # each group's colour and shape are in every caption
        if not all(g.colour[:1] in c and g.shape[:1] in c for g in scene for c in record.captions):
            return None
    return [key(s) for s in scenes]


def queue_diagnostics(records, scene_keys, batch_size: int, queue_size: int, steps: int, seed: int) -> dict:
    """Walk the seed's pair order: per query, how many queued keys (the last `queue_size`
    enqueued) come from its own image, or from an image with the same attributes."""
    from wenlan_cli.data.pipeline import PairSampler

    sampler = PairSampler([len(r.captions) for r in records], batch_size, seed=seed)
    order = iter(sampler)
    images = [next(order)[0] for _ in range(steps * batch_size)]
    slots = queue_size // batch_size
    same_image = same_scene = queries = with_any = 0
    from collections import Counter

    window: list[list[int]] = []
    counts_img: Counter = Counter()
    counts_scene: Counter = Counter()
    for s in range(steps):
        batch = images[s * batch_size : (s + 1) * batch_size]
        for i in batch:
            a = counts_img[i]
            b = counts_scene[scene_keys[i]] if scene_keys else 0
            same_image += a
            same_scene += b
            with_any += (a + b) > 0
            queries += 1
        window.append(batch)
        for i in batch:
            counts_img[i] += 1
            if scene_keys:
                counts_scene[scene_keys[i]] += 1
        if len(window) > slots:
            for i in window.pop(0):
                counts_img[i] -= 1
                if scene_keys:
                    counts_scene[scene_keys[i]] -= 1
    return {
        "same_image_negatives_per_query": round(same_image / queries, 4),
        "same_scene_other_image_negatives_per_query": round((same_scene - same_image) / queries, 4) if scene_keys else None,
        "share_of_queries_with_a_false_negative": round(with_any / queries, 4),
    }


# ----------------------------------------------------------------------------- main


def parse_args() -> argparse.Namespace:
    """The options, with --quick applied and the lists parsed (batch_sizes, seeds_list, losses_list)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--losses", default="clip,moco")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--synth-train", type=int, default=3000)
    parser.add_argument("--synth-val", type=int, default=500)
    parser.add_argument("--synth-test", type=int, default=100)
    parser.add_argument("--queue-size", type=int, default=1024)
    parser.add_argument("--momentum", type=float, default=None, help="default: the model's (0.99)")
    parser.add_argument("--temperature", type=float, default=None, help="default: the model's (0.07), both losses")
    parser.add_argument("--queue-init", choices=["random", "empty"], default="random")
    parser.add_argument("--in-batch-negatives", action="store_true")
    parser.add_argument("--queue-warmup", type=int, default=0, help="steps of in-batch loss before the queue loss")
    parser.add_argument("--mask-false-negatives", action="store_true", help="moco: wenlan's false-negative mask")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--weight-decay", type=float, default=0.05)
    parser.add_argument("--workers", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--keep", help="keep the runs in this folder instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 20 steps, tiny data")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.warmup = "0", 20, 4
        args.synth_train, args.synth_val, args.synth_test = 400, 60, 60
        args.queue_size = 128
    args.batch_sizes_list = [int(x) for x in args.batch_sizes.split(",")]
    args.seeds_list = [int(x) for x in args.seeds.split(",")]
    args.losses_list = [x.strip() for x in args.losses.split(",")]
    if "moco" in args.losses_list:
        bad = [b for b in args.batch_sizes_list if args.queue_size % b]
        if bad:
            parser.error(f"--queue-size {args.queue_size} must be a multiple of every batch size (not of {bad}).")
    return args


def train_and_evaluate(work: Path, batch: int, seed: int, loss: str, args, val_records) -> dict:
    """One run of `wenlan pretrain` (the moco loss swapped for the variant when one is
    asked for), evaluated on val: its entry in "runs"."""
    options = dict(
        model="brivl-tiny", dataset="synth", steps=args.steps, batch_size=batch, lr=args.lr,
        warmup=args.warmup, weight_decay=args.weight_decay, loss=loss, seed=seed,
        temperature=args.temperature, device=args.device, workers=args.workers,
        log_every=max(1, args.steps // 10), keep=1, synth_train=args.synth_train,
        synth_val=args.synth_val, synth_test=args.synth_test,
    )
    if loss == "moco":
        options.update(queue_size=args.queue_size, momentum=args.momentum,
                       mask_false_negatives=args.mask_false_negatives)
    variant_on = args.queue_init != "random" or args.in_batch_negatives or args.queue_warmup > 0
    variant = None
    if loss == "moco" and variant_on:
        variant = QueueLossVariant(args.queue_size, batch, queue_init=args.queue_init,
                                   in_batch=args.in_batch_negatives, warmup_steps=args.queue_warmup)
    t0 = time.monotonic()
    with patched_loss(variant):
        run = run_wenlan(work, f"b{batch}-s{seed}-{loss}", **options)
    train_s = time.monotonic() - t0
    metrics, stats = evaluate_checkpoint(run["checkpoint"], val_records, args.device, with_stats=True)
    log = run["train_log"]
    entry = {
        "batch_size": batch, "seed": seed, "loss": loss, "steps": run["steps"],
        "final_loss": log[-1]["loss"] if log else None,
        "run_s": round(train_s, 1), **short_metrics(metrics), **stats,
    }
    if loss == "moco":
        entry["queue_drift"] = queue_drift(run["checkpoint"], batch)
    return entry


def summarize(runs: list[dict], batch_sizes: list[int], losses: list[str], seeds: list[int]) -> tuple[dict, dict]:
    """Mean +- std of mean recall per batch size and loss, and the paired moco-vs-clip verdict."""
    summary, verdict = {}, {}
    for batch in batch_sizes:
        for loss in losses:
            chosen = [r for r in runs if r["batch_size"] == batch and r["loss"] == loss]
            summary[f"b{batch}_{loss}"] = {
                **mean_std([r["mean_recall"] for r in chosen]),
                "image_mean_vector_norm": mean_std([r["image_mean_vector_norm"] for r in chosen])["mean"],
            }
        if {"moco", "clip"} <= set(losses):
            verdict[f"b{batch}"] = moco_vs_clip(runs, batch, seeds)
    return summary, verdict


def all_queue_diagnostics(args, train_records, scene_keys) -> dict:
    """Per batch size: how long the queue holds random slots, epochs seen, and the false
    negatives a queue of this size holds (`queue_diagnostics`)."""
    diagnostics = {}
    for batch in args.batch_sizes_list:
        diag = {
            "steps_with_random_queue_slots": min(args.steps, args.queue_size // batch),
            "epochs_seen": round(args.steps * batch / len(train_records), 2),
            "queue_over_train_images": round(args.queue_size / len(train_records), 3),
        }
        diag.update(queue_diagnostics(train_records, scene_keys, batch, args.queue_size, args.steps, args.seeds_list[0]))
        diagnostics[f"b{batch}"] = diag
    return diagnostics


def main() -> None:
    args = parse_args()
    batch_sizes, seeds, losses = args.batch_sizes_list, args.seeds_list, args.losses_list
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()

    synth = synth_options(args.synth_train, args.synth_val, args.synth_test)
    train_records = load_split(None, "train", synth)
    val_records = load_split(None, "val", synth)
    scene_keys = train_scene_keys(synth, train_records)

    runs = []
    started = time.monotonic()
    with work_dir(args.keep, "wenlan-queue-vs-inbatch-") as work:
        for batch in batch_sizes:
            for seed in seeds:
                for loss in losses:
                    runs.append(train_and_evaluate(work, batch, seed, loss, args, val_records))

    summary, verdict = summarize(runs, batch_sizes, losses, seeds)
    diagnostics = all_queue_diagnostics(args, train_records, scene_keys) if "moco" in losses else {}
    from wenlan_cli.models.registry import get_model_config

    base = get_model_config("brivl-tiny")
    print(json.dumps({
        "benchmark": "queue_vs_inbatch",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "config": {
            "model": "brivl-tiny", "steps": args.steps, "batch_sizes": batch_sizes, "seeds": seeds, "losses": losses,
            "train_images": len(train_records), "val_images": len(val_records),
            "queue_size": args.queue_size, "momentum": args.momentum if args.momentum is not None else base.momentum,
            "temperature": args.temperature if args.temperature is not None else base.temperature,
            "queue_init": args.queue_init, "in_batch_negatives": args.in_batch_negatives,
            "queue_warmup": args.queue_warmup, "mask_false_negatives": args.mask_false_negatives, "lr": args.lr, "warmup": args.warmup, "weight_decay": args.weight_decay,
        },
        "runs": runs,
        "mean_recall": summary,
        "verdict": verdict or None,
        "queue_diagnostics": diagnostics or None,
        "total_s": round(time.monotonic() - started, 1),
    }, ensure_ascii=False))

if __name__ == "__main__":
    main()
