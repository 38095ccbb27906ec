"""Queues without false negatives: does masking a query's own image / identical caption
among the queued keys help? `--mask-false-negatives` on vs off, same seeds.

    python benchmarks/false_negatives.py                 # 3 seeds, 240 steps of batch 32
    python benchmarks/false_negatives.py --quick         # smoke run
    python benchmarks/false_negatives.py --seeds 0 --steps 200

brivl-tiny from scratch, `--loss moco`, on the synthetic data with 5 captions per image.
The sampler shows each image once per epoch with one of its captions, so the same image
is back in the queue, paired with another caption, as soon as the queue holds more than
an epoch: here 1,000 training images and a queue of 2,048 keys (2 epochs), as when a
user's dataset is smaller than the default queue (brivl-tiny's 4,096). Both arms run
through `Pretrainer.run()` (what `wenlan pretrain` runs) with the same seed, data order,
queue warm-up (`--queue-warmup`, 60 in-batch steps: towers from scratch start collapsed,
see README benchmark 3) and everything else; only the mask differs. Each final checkpoint
is evaluated on the val split (500 images x 5 captions, mean of the six R@K).

Prints ONE JSON line: every run (recall, pairs/s), mean ± std per arm, the paired
(on - off) difference per seed, and how many queued keys the mask removed per query
(counted in the masked run; the unmasked run has the same data order, so the same ids).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import evaluate_checkpoint, load_split, mean_std, run_wenlan, short_metrics, synth_options, work_dir  # noqa: E402


class MaskCounter:
    """Wraps `false_negatives` (as `BriVL.forward` calls it, once per queue per step) and
    counts the queued keys it removes per query, after the queue warm-up."""

    def __init__(self) -> None:
        self.calls = self.queries = self.masked = self.queries_with_any = 0

    def __enter__(self):
        import wenlan_cli.models.brivl as brivl_module

        self.module = brivl_module
        self.original = brivl_module.false_negatives

        def counted(query_ids, queue_ids):
            mask = self.original(query_ids, queue_ids)
            self.calls += 1
            if self.calls % 2:  # the image queue; the text queue holds the same ids
                self.queries += mask.shape[0]
                self.masked += int(mask.sum())
                self.queries_with_any += int(mask.any(dim=1).sum())
            return mask

        brivl_module.false_negatives = counted
        return self

    def __exit__(self, *exc):
        self.module.false_negatives = self.original
        return False

    def summary(self) -> dict:
        q = max(self.queries, 1)
        return {
            "masked_keys_per_query": round(self.masked / q, 3),
            "share_of_queries_with_a_masked_key": round(self.queries_with_any / q, 4),
        }


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--steps", type=int, default=240)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--queue-size", type=int, default=2048)
    parser.add_argument("--queue-warmup", type=int, default=60)
    parser.add_argument("--synth-train", type=int, default=1000)
    parser.add_argument("--synth-val", type=int, default=500)
    parser.add_argument("--synth-test", type=int, default=100)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--keep", help="keep the runs in this folder instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, 30 steps, tiny data")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.warmup, args.queue_warmup = "0", 30, 4, 5
        args.synth_train, args.synth_val, args.synth_test, args.queue_size = 160, 40, 20, 256
    if args.queue_size % args.batch_size:
        parser.error(f"--queue-size {args.queue_size} must be a multiple of --batch-size {args.batch_size}.")
    return args


def masked_run(work: Path, seed: int, mask: bool, val_records, args) -> tuple[dict, dict]:
    """One moco run with the mask on or off, counting what the mask removes: its entry
    in "runs" and the mask counts."""
    options = dict(
        model="brivl-tiny", dataset="synth", steps=args.steps, batch_size=args.batch_size, lr=args.lr,
        warmup=args.warmup, loss="moco", queue_size=args.queue_size, queue_warmup=args.queue_warmup,
        mask_false_negatives=mask, seed=seed, device=args.device, workers=0,
        log_every=max(1, args.steps // 10), keep=1, synth_train=args.synth_train,
        synth_val=args.synth_val, synth_test=args.synth_test,
    )
    counter = MaskCounter()
    t0 = time.monotonic()
    with counter:
        run = run_wenlan(work, f"s{seed}-{'on' if mask else 'off'}", **options)
    train_s = time.monotonic() - t0
    masked = counter.summary()
    metrics = evaluate_checkpoint(run["checkpoint"], val_records, args.device)
    log = run["train_log"]
    entry = {
        "seed": seed, "mask": mask, "steps": run["steps"], "final_loss": log[-1]["loss"] if log else None,
        "train_s": round(train_s, 1), "pairs_per_s": round(run["steps"] * args.batch_size / train_s, 1),
        **short_metrics(metrics),
    }
    return entry, masked


def compare(runs: list[dict], seeds: list[int]) -> dict:
    """Mask on against off: means per metric and the paired per-seed differences."""

    def pick(mask, key):
        return [r[key] for r in runs if r["mask"] is mask]

    diffs = [
        next(r["mean_recall"] for r in runs if r["seed"] == s and r["mask"]) - next(r["mean_recall"] for r in runs if r["seed"] == s and not r["mask"])
        for s in seeds
    ]
    return {
        "mean_recall": {"mask_on": mean_std(pick(True, "mean_recall")), "mask_off": mean_std(pick(False, "mean_recall"))},
        "i2t_r1": {"mask_on": mean_std(pick(True, "i2t_r1")), "mask_off": mean_std(pick(False, "i2t_r1"))},
        "t2i_r1": {"mask_on": mean_std(pick(True, "t2i_r1")), "mask_off": mean_std(pick(False, "t2i_r1"))},
        "on_minus_off": mean_std(diffs),
        "mask_wins_every_seed": all(x > 0 for x in diffs),
        "pairs_per_s": {"mask_on": mean_std(pick(True, "pairs_per_s"))["mean"], "mask_off": mean_std(pick(False, "pairs_per_s"))["mean"]},
    }


def main() -> None:
    args = parse_args()
    seeds = [int(x) for x in args.seeds.split(",")]
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()

    synth = synth_options(args.synth_train, args.synth_val, args.synth_test)
    train_records = load_split(None, "train", synth)
    val_records = load_split(None, "val", synth)

    runs, counts = [], {}
    started = time.monotonic()
    with work_dir(args.keep, "wenlan-false-negatives-") as work:
        for seed in seeds:
            for mask in (True, False):
                entry, masked = masked_run(work, seed, mask, val_records, args)
                if mask:
                    counts[seed] = masked
                runs.append(entry)

    print(json.dumps({
        "benchmark": "false_negatives",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "config": {
            "model": "brivl-tiny", "loss": "moco", "steps": args.steps, "batch_size": args.batch_size, "seeds": seeds,
            "train_images": len(train_records), "captions_per_image": 5, "val_images": len(val_records),
            "queue_size": args.queue_size, "queue_over_train_images": round(args.queue_size / len(train_records), 2),
            "epochs_seen": round(args.steps * args.batch_size / len(train_records), 2),
            "queue_warmup": args.queue_warmup, "lr": args.lr, "warmup": args.warmup,
        },
        "runs": runs,
        **compare(runs, seeds),
        "masked": counts,
        "total_s": round(time.monotonic() - started, 1),
    }, ensure_ascii=False))

if __name__ == "__main__":
    main()
