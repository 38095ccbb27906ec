"""The WenLan paper's claim in the paper's setting: with PRETRAINED towers at small batch,
do BriVL's queues (`--loss moco`) beat in-batch negatives (`--loss clip`)?

    python benchmarks/paper_setting.py              # batch 16 and 32, 3 seeds, both losses
    python benchmarks/paper_setting.py --quick      # smoke run
    python benchmarks/paper_setting.py --seeds 0 --steps 100

Benchmark 3 (`queue_vs_inbatch.py`) trains the towers from scratch, where the queue loss
starts collapsed; BriVL starts from an ImageNet EfficientNet and a Chinese RoBERTa. This
reproduces that on a CPU scale, in two stages, both through `Pretrainer.run()` (what
`wenlan pretrain` runs):

1. Pretraining: brivl-tiny on the built-in synthetic data (coloured shapes), in-batch
   loss, `--pretrain-steps` (120) of batch 64. The character vocabulary covers both datasets,
   as a pretrained Chinese BERT's covers any Chinese text (characters the first dataset
   never uses keep their initial embeddings). Its image backbone is written as a
   safetensors file and its BERT, with the tokenizer, as a Hugging Face folder: what
   `wenlan pretrain --pretrained --image-weights FILE --text-weights DIR` loads. The
   region Transformer, the text Transformer and both MLPs start fresh, as in BriVL.
2. The comparison: on `tiles` from benchmarks/unseen_data.py (patterned tiles described
   like product listings: other drawings, other words), moco against clip at batch 16
   and 32, 3 seeds, the same steps (`--steps`, 80) and everything else equal, from those weights; no
   queue warm-up (the paper's loss throughout). The queue holds `--queue-size` keys with
   the false-negative mask on (`--mask-false-negatives`; `--no-mask` turns it off: tiles
   repeats attribute sets, so identical captions recur). Each final checkpoint is evaluated on the
   tiles val split (every caption a query; mean of the six R@K).

Prints ONE JSON line: every run, mean ± std per (batch, loss), the paired moco - clip
difference per seed and the winner at each batch size, plus the pretraining run's own
val recall on the synthetic data.
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

from _common import (  # noqa: E402
    NoEvalPretrainer,
    evaluate_checkpoint,
    load_split,
    mean_std,
    moco_vs_clip,
    run_wenlan,
    short_metrics,
    synth_options,
    work_dir,
)


def union_vocab_trainer(extra_captions: list[str]) -> type:
    """`NoEvalPretrainer` whose character vocabulary also covers `extra_captions`."""
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

    class UnionVocabPretrainer(NoEvalPretrainer):
        def build_tokenizer(self, model_config, train, resume_dir):
            return tokenizer_from_vocab(build_char_vocab([c for r in train for c in r.captions] + extra_captions))

    return UnionVocabPretrainer


def export_towers(checkpoint: Path, folder: Path) -> tuple[Path, Path]:
    """The checkpoint's image backbone as a safetensors file and its BERT + tokenizer as
    a Hugging Face folder (the two things `--pretrained` loads)."""
    from safetensors.torch import save_file

    from wenlan_cli.loading import load_checkpoint
    from wenlan_cli.models.tokenizer import save_tokenizer

    loaded = load_checkpoint(checkpoint)
    folder.mkdir(parents=True, exist_ok=True)
    image_weights = folder / "backbone.safetensors"
    save_file({k: v.contiguous() for k, v in loaded.model.image_encoder.backbone.state_dict().items()}, str(image_weights))
    text_dir = folder / "text"
    loaded.model.text_encoder.language_model.save_pretrained(str(text_dir))
    save_tokenizer(loaded.tokenizer, text_dir)
    return image_weights, text_dir


class whole_towers:
    """`--init towers` (benchmark-only): `create_model`, as `Pretrainer` calls it, then the
    pretraining run's whole query towers (heads included) loaded into the new model and
    its momentum copies, for the length of a `with` block."""

    def __init__(self, checkpoint: Path | None) -> None:
        from wenlan_cli.engine.checkpoint import load_query_state

        self.state = load_query_state(checkpoint) if checkpoint is not None else None
        self.missing: list[str] = []

    def __enter__(self):
        import wenlan_cli.train.loop as loop_module

        self.module, self.original = loop_module, loop_module.create_model
        if self.state is None:
            return self

        def create(*args, **kwargs):
            model = self.original(*args, **kwargs)
            missing, unexpected = model.load_state_dict(self.state, strict=False)
            if unexpected:
                raise RuntimeError(f"the pretrained towers do not fit: unexpected {unexpected[:3]}")
            self.missing = [k for k in missing if k.startswith(("image_encoder.", "text_encoder."))]
            if model.uses_queues:
                for online, target in model.momentum_pairs():
                    target.load_state_dict(online.state_dict())
            return model

        loop_module.create_model = create
        return self

    def __exit__(self, *exc):
        self.module.create_model = self.original
        return False


def parse_args() -> argparse.Namespace:
    """The options, with --quick applied and the lists parsed (batch_sizes_list, seeds_list, losses_list)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch-sizes", default="16,32")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--losses", default="clip,moco")
    parser.add_argument("--steps", type=int, default=80, help="steps of each comparison run")
    parser.add_argument("--pretrain-steps", type=int, default=120)
    parser.add_argument("--synth-train", type=int, default=3000)
    parser.add_argument("--synth-val", type=int, default=500)
    parser.add_argument("--tiles-train", type=int, default=800)
    parser.add_argument("--tiles-val", type=int, default=300)
    parser.add_argument("--queue-size", type=int, default=1024)
    parser.add_argument("--no-mask", action="store_true", help="moco without the false-negative mask")
    parser.add_argument("--init", choices=["backbones", "towers"], default="backbones",
                        help="what comes pretrained: the encoders (BriVL's setting) or the whole towers, heads included")
    parser.add_argument("--lr", type=float, default=5e-4, help="peak lr of the comparison runs")
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--keep", help="keep the runs in this folder instead of a temporary one")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 seed, a few steps, tiny data")
    args = parser.parse_args()
    if args.quick:
        args.seeds, args.steps, args.pretrain_steps, args.warmup = "0", 10, 20, 3
        args.synth_train, args.synth_val, args.tiles_train, args.tiles_val, args.queue_size = 300, 50, 120, 40, 64
    args.batch_sizes_list = [int(x) for x in args.batch_sizes.split(",")]
    args.seeds_list = [int(x) for x in args.seeds.split(",")]
    args.losses_list = [x.strip() for x in args.losses.split(",")]
    if "moco" in args.losses_list and any(args.queue_size % b for b in args.batch_sizes_list):
        parser.error(f"--queue-size {args.queue_size} must be a multiple of every batch size.")
    return args


def pretrain_towers(work: Path, extra: list[str], synth_val, args) -> tuple[dict, dict, float]:
    """Pretrain brivl-tiny with clip on the synthetic data (a vocabulary that also holds
    the tiles' captions): the run, its synth val recall and its seconds."""
    t0 = time.monotonic()
    pre = run_wenlan(
        work, "pretrain", trainer_class=union_vocab_trainer(extra), model="brivl-tiny", dataset="synth",
        steps=args.pretrain_steps, batch_size=64, loss="clip", lr=1e-3, warmup=min(50, args.pretrain_steps // 4),
        seed=0, device=args.device, workers=0, keep=1, log_every=max(1, args.pretrain_steps // 10),
        synth_train=args.synth_train, synth_val=args.synth_val, synth_test=10,
    )
    pretrain_s = time.monotonic() - t0
    pretrain_recall = short_metrics(evaluate_checkpoint(pre["checkpoint"], synth_val, args.device))
    return pre, pretrain_recall, pretrain_s


def compare_run(work: Path, tiles: Path, weights: tuple[Path, Path], pretrained_checkpoint, tiles_val,
                batch: int, seed: int, loss: str, args) -> dict:
    """One comparison run on the tiles from the pretrained encoders (or whole towers
    with --init towers), evaluated on the tiles' val split: its entry in "runs"."""
    image_weights, text_dir = weights
    options = dict(
        model="brivl-tiny", dataset="aic-icc", data_dir=str(tiles), pretrained=True,
        image_weights=str(image_weights), text_weights=str(text_dir), steps=args.steps,
        batch_size=batch, lr=args.lr, warmup=args.warmup, loss=loss, seed=seed, device=args.device,
        workers=0, keep=1, log_every=max(1, args.steps // 10),
    )
    if loss == "moco":
        options.update(queue_size=args.queue_size, queue_warmup=0, mask_false_negatives=not args.no_mask)
    t0 = time.monotonic()
    with whole_towers(pretrained_checkpoint if args.init == "towers" else None) as towers:
        run = run_wenlan(work, f"b{batch}-s{seed}-{loss}", **options)
    if towers.missing:
        raise RuntimeError(f"--init towers left tower weights unloaded: {towers.missing[:3]}")
    train_s = time.monotonic() - t0
    metrics = evaluate_checkpoint(run["checkpoint"], tiles_val, args.device)
    log = run["train_log"]
    return {
        "batch_size": batch, "seed": seed, "loss": loss, "steps": run["steps"],
        "final_loss": log[-1]["loss"] if log else None, "train_s": round(train_s, 1),
        **short_metrics(metrics),
    }


def summarize(runs: list[dict], batch_sizes: list[int], losses: list[str], seeds: list[int]) -> tuple[dict, dict]:
    """Mean +- std of mean recall per batch size and loss, and the paired moco-vs-clip verdict."""
    summary, verdict = {}, {}
    for batch in batch_sizes:
        for loss in losses:
            summary[f"b{batch}_{loss}"] = mean_std([r["mean_recall"] for r in runs if r["batch_size"] == batch and r["loss"] == loss])
        if {"moco", "clip"} <= set(losses):
            verdict[f"b{batch}"] = moco_vs_clip(runs, batch, seeds)
    return summary, verdict


def main() -> None:
    args = parse_args()
    batch_sizes, seeds, losses = args.batch_sizes_list, args.seeds_list, args.losses_list
    if args.threads:
        torch.set_num_threads(args.threads)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import transformers

    from unseen_data import write_dataset
    from wenlan_cli.data.sources import load_records

    transformers.utils.logging.disable_progress_bar()
    started = time.monotonic()
    synth = synth_options(args.synth_train, args.synth_val, 10)
    synth_val = load_split(None, "val", synth)
    runs = []
    with work_dir(args.keep, "wenlan-paper-setting-") as work:
        tiles = write_dataset("tiles", work / "tiles", train=args.tiles_train, val=args.tiles_val, seed=0)
        tiles_train = load_records("aic-icc", str(tiles), "train")
        tiles_val = load_records("aic-icc", str(tiles), "val")
        extra = [c for r in list(tiles_train) + list(tiles_val) for c in r.captions]
        pre, pretrain_recall, pretrain_s = pretrain_towers(work, extra, synth_val, args)
        weights = export_towers(pre["checkpoint"], work / "towers")
        for batch in batch_sizes:
            for seed in seeds:
                for loss in losses:
                    runs.append(compare_run(work, tiles, weights, pre["checkpoint"], tiles_val, batch, seed, loss, args))

    summary, verdict = summarize(runs, batch_sizes, losses, seeds)
    print(json.dumps({
        "benchmark": "paper_setting",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "pretraining": {
            "data": "built-in synthetic", "train_images": args.synth_train, "steps": args.pretrain_steps, "batch_size": 64,
            "loss": "clip", "train_s": round(pretrain_s, 1), "synth_val": pretrain_recall,
        },
        "config": {
            "model": "brivl-tiny", "data": "tiles (benchmarks/unseen_data.py)", "train_images": len(tiles_train),
            "val_images": len(tiles_val), "steps": args.steps, "batch_sizes": batch_sizes, "seeds": seeds,
            "losses": losses, "init": args.init, "queue_size": args.queue_size, "queue_warmup": 0, "mask_false_negatives": not args.no_mask, "lr": args.lr, "warmup": args.warmup,
        },
        "runs": runs,
        "mean_recall": summary,
        "verdict": verdict or None,
        "total_s": round(time.monotonic() - started, 1),
    }, ensure_ascii=False))

if __name__ == "__main__":
    main()
