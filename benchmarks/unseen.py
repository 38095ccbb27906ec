"""Data the defaults were never tuned on: wenlan with its defaults against open_clip.

    .venv/bin/pip install -c constraints.txt open_clip_torch   # or: pip install -e '.[bench]'
    python benchmarks/unseen.py                                    # full scale: 3,000 x 5 train, 500 val, pure defaults
    python benchmarks/unseen.py --train 1000 --val 200 --time-budget 150 --caption-time-budget 90   # reduced
    python benchmarks/unseen.py --quick                            # smoke run: tiny data, seconds

For each of three generated datasets (benchmarks/unseen_data.py: tiles, clocks,
landscapes; no drawing and no word shared with the built-in data), written in the
AIC-ICC layout:

1. `wenlan pretrain --dataset aic-icc --data-dir D` with its defaults: only data options
   (the run's budget then comes from the data-size rule; with --time-budget T the
   benchmark adds `--time-budget T` and nothing else, for a reduced-scale run);
2. open_clip at the same wall-clock: `vs_open_clip.py`'s driver (open_clip's own model,
   ClipLoss, transforms and tokenizer; the same backbones and batch), trained for the
   seconds wenlan's training loop took, its warm-up + cosine schedule sized from its own
   speed measured in a short probe (warm-up 10 % of its steps, wenlan's lr and decay);
3. `wenlan finetune-caption` on wenlan's checkpoint with its defaults (data options,
   --no-meteor as only CIDEr is wanted; --caption-time-budget adds a time budget), and
   the best checkpoint's val CIDEr (the official AIC-ICC protocol, x100).

Val mean recall is the mean of the six R@K (t2i, i2t at 1/5/10) over the val split,
each model's embeddings through wenlan's `retrieval_metrics`.

Targets (issue "learn what it is given"): wenlan's default run ahead of open_clip on
every dataset; captioning with defaults at CIDEr >= 100 on each.

Prints ONE JSON line with every figure, the scale and the targets met.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from types import SimpleNamespace

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402

from _common import work_dir  # noqa: E402
from unseen_data import DATASETS, write_dataset  # noqa: E402


def run_wenlan(data: Path, out: Path, time_budget: float | None) -> dict:
    """`wenlan pretrain --dataset aic-icc --data-dir data` (+ --time-budget) as the CLI runs it."""
    from rich.console import Console

    from wenlan_cli.config import build_train_config
    from wenlan_cli.train.loop import Pretrainer

    options = {"dataset": "aic-icc", "data_dir": str(data), "out": str(out), "time_budget": time_budget}
    cfg = build_train_config({}, options)
    trainer = Pretrainer(cfg, console=Console(stderr=True))
    start = time.monotonic()
    result = trainer.run()
    wall = time.monotonic() - start
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    steps = [line for line in lines if "loss" in line]
    return {
        "options": {k: v for k, v in options.items() if v is not None and k not in ("data_dir", "out")},
        "plan": trainer.plan.to_dict(),
        "steps": result.step,
        "loop_s": round(steps[-1]["time"], 1),
        "wall_s": round(wall, 1),
        "final_loss": steps[-1]["loss"],
        "warnings": trainer.warnings,
        "val": short(result.metrics),
        "checkpoint": str(result.checkpoint),
    }


def run_open_clip(open_clip, data: Path, work: Path, budget_s: float, seed: int) -> dict:
    """open_clip trained for `budget_s` seconds of its loop on the same data and batch."""
    import vs_open_clip as oc

    from wenlan_cli.data.sources import load_records
    from wenlan_cli.models.registry import get_model_config
    from wenlan_cli.train.loop import default_workers

    wenlan_config = get_model_config("brivl-tiny")
    train = load_records("aic-icc", str(data), "train")
    val = load_records("aic-icc", str(data), "val")
    text_dir = work / "oc_text_tower"
    text_dir.mkdir(parents=True, exist_ok=True)
    context = oc.write_text_tower(text_dir, train, wenlan_config.text.bert_config, wenlan_config.text.max_length)
    config_file = work / f"{oc.OC_MODEL_NAME}.json"
    config_file.write_text(json.dumps(oc.open_clip_config(text_dir, wenlan_config, context)), encoding="utf-8")
    open_clip.add_model_config(config_file)  # this dataset's text tower under the benchmark's model name
    args = SimpleNamespace(device="cpu", batch_size=64, workers=default_workers(), lr=1e-3, weight_decay=0.05,
                           warmup=1, grad_clip=1.0, precision="fp32")
    probe, *_ = oc.train_open_clip(open_clip, wenlan_config, train, args, steps=14, max_time=None, warm_steps=4, seed=seed)
    steps = max(2, int(budget_s * probe["pairs_per_s"] / args.batch_size))
    args.warmup = max(1, round(0.1 * steps))
    timing, model, preprocess_val, tokenizer = oc.train_open_clip(
        open_clip, wenlan_config, train, args, steps=steps, max_time=budget_s, warm_steps=min(10, steps - 1), seed=seed,
    )
    metrics = oc.evaluate_open_clip(model, preprocess_val, tokenizer, val, "cpu")
    return {
        "planned_steps": steps,
        "steps": timing["steps"],
        "loop_s": round(timing["loop_s"], 1),
        "probe_pairs_per_s": round(probe["pairs_per_s"], 1),
        "warmup": args.warmup,
        "final_loss": round(timing["final_loss"], 4),
        "val": short(metrics),
    }


def run_caption(checkpoint: str, data: Path, out: Path, time_budget: float | None) -> dict:
    """`wenlan finetune-caption --checkpoint C --dataset aic-icc --data-dir D --no-meteor` (+ --time-budget)."""
    from rich.console import Console

    from wenlan_aic_icc.finetune import CaptionFinetuner, FinetuneConfig
    from wenlan_aic_icc.scoring import metrics_x100

    cfg = FinetuneConfig(checkpoint=checkpoint, dataset="aic-icc", data_dir=str(data), out=str(out), meteor=False, time_budget=time_budget)
    tuner = CaptionFinetuner(cfg, console=Console(stderr=True))
    start = time.monotonic()
    result = tuner.run()
    scores = metrics_x100(result.scores)
    return {
        "plan": tuner.plan.to_dict(),
        "steps": result.step,
        "best_step": result.scores["step"],
        "wall_s": round(time.monotonic() - start, 1),
        "CIDEr": round(scores["CIDEr"], 1),
        "BLEU-4": round(scores["Bleu_4"], 1),
        "warnings": tuner.warnings,
    }


def short(metrics: dict | None) -> dict | None:
    if metrics is None:
        return None
    keys = ("mean_recall", "t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")
    return {k: round(float(metrics[k]), 2) for k in keys if k in metrics}


def parse_args() -> argparse.Namespace:
    """The options, with --quick applied and the dataset names checked (names_list)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", default=",".join(DATASETS), help=f"comma-separated, from {', '.join(DATASETS)}")
    parser.add_argument("--train", type=int, default=3000, help="training images per dataset (5 captions each)")
    parser.add_argument("--val", type=int, default=500, help="validation images per dataset")
    parser.add_argument("--time-budget", type=float, default=None,
                        help="seconds: add `--time-budget` to wenlan pretrain (reduced scale; default: pure defaults)")
    parser.add_argument("--caption-time-budget", type=float, default=None,
                        help="seconds: add `--time-budget` to finetune-caption (default: its defaults)")
    parser.add_argument("--no-caption", action="store_true", help="retrieval only")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", help="keep data and runs in this folder instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 200 train / 40 val, 20 s and 10 s budgets")
    args = parser.parse_args()
    if args.quick:
        args.train, args.val, args.time_budget, args.caption_time_budget = 200, 40, 20.0, 10.0
    args.names_list = [n.strip() for n in args.datasets.split(",") if n.strip()]
    unknown = [n for n in args.names_list if n not in DATASETS]
    if unknown:
        parser.error(f"unknown dataset {unknown[0]!r}; choose from {', '.join(DATASETS)}")
    return args


def one_dataset(name: str, work: Path, open_clip, args) -> dict:
    """wenlan pretrain, open_clip for the same training-loop seconds, and (unless
    --no-caption) finetune-caption on one generated dataset: its entry in "datasets"."""
    data = work / name / "data"
    if not (data / "done").exists():
        write_dataset(name, data, train=args.train, val=args.val, seed=args.seed)
        (data / "done").write_text("", encoding="utf-8")
    print(f"[unseen] {name}: wenlan pretrain", file=sys.stderr, flush=True)
    wenlan = run_wenlan(data, work / name / "wenlan", args.time_budget)
    print(f"[unseen] {name}: open_clip for {wenlan['loop_s']} s", file=sys.stderr, flush=True)
    torch.manual_seed(args.seed)
    other = run_open_clip(open_clip, data, work / name / "open_clip", wenlan["loop_s"], args.seed)
    entry = {"wenlan": wenlan, "open_clip": other}
    if not args.no_caption:
        print(f"[unseen] {name}: finetune-caption", file=sys.stderr, flush=True)
        entry["caption"] = run_caption(wenlan["checkpoint"], data, work / name / "caption", args.caption_time_budget)
    entry["wenlan_ahead"] = wenlan["val"]["mean_recall"] > other["val"]["mean_recall"]
    print(f"[unseen] {name} done: {json.dumps(entry, ensure_ascii=False)}", file=sys.stderr, flush=True)
    return entry


def main() -> None:
    args = parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import transformers

    transformers.utils.logging.disable_progress_bar()
    import vs_open_clip

    open_clip = vs_open_clip.import_open_clip()
    results = {}
    started = time.monotonic()
    with work_dir(args.keep, "wenlan-unseen-") as work:
        for name in args.names_list:
            results[name] = one_dataset(name, work, open_clip, args)
    targets = {
        "wenlan_ahead_of_open_clip_on_every_dataset": all(r["wenlan_ahead"] for r in results.values()),
    }
    if not args.no_caption:
        targets["caption_cider_at_least_100_on_every_dataset"] = all(r["caption"]["CIDEr"] >= 100 for r in results.values())
    print(json.dumps({
        "benchmark": "unseen",
        "scale": {"train_images": args.train, "val_images": args.val, "captions_per_image": 5,
                  "pretrain": f"--time-budget {args.time_budget:g}" if args.time_budget else "pure defaults",
                  "caption": ("skipped" if args.no_caption else
                              f"--time-budget {args.caption_time_budget:g} --no-meteor" if args.caption_time_budget else "defaults, --no-meteor")},
        "open_clip_version": open_clip.__version__,
        "torch_threads": torch.get_num_threads(),
        "datasets": results,
        "targets_met": targets,
        "total_s": round(time.monotonic() - started, 1),
    }, ensure_ascii=False))

if __name__ == "__main__":
    main()
