"""Data pipeline against the train step's consumption, brivl-tiny on this machine's cores.

    python benchmarks/data.py [--configs default,w0,w1,w1t1] [--variants synth128,photo640]
                              [--batch-size 64] [--rounds 3] [--quick]

The pipeline is what `wenlan pretrain` builds: `PairDataset` (decode the JPEG, resize to
the model's input, place the region boxes) + `PairSampler` + `PairCollator` (stack, pad
boxes and token ids) through a DataLoader with the same options (`persistent_workers`,
`prefetch_factor=4` with workers). There is no random augmentation in the pipeline; the
transforms are the decode, the resize and the boxes. Captions are tokenised once up front
here (`tokenize_all` per record, timed and reported separately, with its cost for the
default 10k x 5 captions); `wenlan pretrain` itself hands `PairDataset` a `CaptionTokens`,
and `PairCollator` tokenises each batch's captions in the DataLoader worker, so its
workers also do that small part of the work.

Each config is `wN` (N DataLoader workers, torch's default intra-op threads in the main
process) or `wNtM` (also `torch.set_num_threads(M)` in the main process while it runs);
`default` is what `wenlan pretrain` picks here (`default_workers()`).

Measured, per variant of images (`synth128`: the built-in synthetic data, 128x128 JPEGs of
~3 KB; `photo640`: 640x480 photo-like JPEGs of ~80 KB, for realistic decoding costs):

* pipeline alone: samples/s of iterating the DataLoader with nothing else running;
* in-memory consumption: pairs/s of the real train step (`Pretrainer.train_step`, including
  moving the batch to the device and normalising it) fed with already-collated batches;
* real-data training: pairs/s of the same step fed by the DataLoader, and the fraction of
  step time spent waiting in `next(batches)` (with 0 workers, that is the decoding itself).

Real-data and in-memory blocks alternate (in-memory, real, in-memory, ...) for `--rounds`
rounds and the medians are compared. Targets: pipeline alone with the default worker count
>= 1.2 x in-memory consumption, and real-data training >= 1/1.2 of in-memory. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

from _images import photo_like  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


def synth_records(root: Path, count: int):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.data.synthetic import write_synthetic_dataset

    folder = root / f"synth-{count}"
    if not (folder / ".complete").exists():
        write_synthetic_dataset(folder, train=count, val=0, test=0, seed=0)
        (folder / ".complete").write_text("ok\n")
    return load_records("synth", str(folder), "train")


def photo_records(root: Path, records, distinct: int):
    """The same records (captions, boxes) with their images replaced by 640x480 JPEGs
    (`distinct` files, cycled)."""
    import dataclasses

    folder = root / f"photo640-{distinct}"
    if not (folder / ".complete").exists():
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(distinct):
            photo_like(i).save(folder / f"{i:06d}.jpg", quality=90)
        (folder / ".complete").write_text("ok\n")
    return [dataclasses.replace(r, image_path=folder / f"{i % distinct:06d}.jpg") for i, r in enumerate(records)]


class TimedBatches:
    """An iterator over batches that adds up the time spent waiting in `next`."""

    def __init__(self, batches) -> None:
        self.batches = batches
        self.wait = 0.0

    def __iter__(self):
        return self

    def __next__(self):
        start = time.perf_counter()
        try:
            return next(self.batches)
        finally:
            self.wait += time.perf_counter() - start


def parse_config(name: str, default_workers: int) -> tuple[str, int, int | None]:
    if name == "default":
        return f"w{default_workers}", default_workers, None
    if not name.startswith("w"):
        raise SystemExit(f"bad config {name!r}: use default, wN or wNtM")
    workers, _, threads = name[1:].partition("t")
    return name, int(workers), int(threads) if threads else None


def make_loader(dataset, sampler, collator, batch_size: int, workers: int) -> DataLoader:
    """The DataLoader exactly as `Pretrainer.make_loader` builds it on a CPU."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        collate_fn=collator,
        num_workers=workers,
        pin_memory=False,
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator(),
    )


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="default,w0,w1,w1t1", help="comma list of default, wN, wNtM")
    parser.add_argument("--variants", default="synth128,photo640")
    parser.add_argument("--batch-size", type=int, default=64, help="`wenlan pretrain`'s default")
    parser.add_argument("--records", type=int, default=2000, help="training images (synthetic)")
    parser.add_argument("--photo-files", type=int, default=500, help="distinct 640x480 JPEGs, cycled over the records")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=20, help="train steps per timed block")
    parser.add_argument("--pipeline-batches", type=int, default=30, help="batches per pipeline-alone measurement")
    parser.add_argument("--workdir", type=Path, help="keep generated data here (reused by later runs)")
    parser.add_argument("--quick", action="store_true", help="smoke run: few records, steps and one round")
    args = parser.parse_args()
    if args.quick:
        args.records, args.photo_files, args.rounds, args.steps, args.pipeline_batches = 320, 64, 1, 4, 6
    return args


def build_variants(root: Path, args: argparse.Namespace) -> tuple[list, dict[str, list]]:
    """The synthetic records and, per requested variant, the records whose images it times."""
    records = synth_records(root, args.records)
    variants = {}
    for name in args.variants.split(","):
        if name == "synth128":
            variants[name] = records
        elif name == "photo640":
            variants[name] = photo_records(root, records, args.photo_files)
        elif name:
            raise SystemExit(f"unknown variant {name!r}")
    return records, variants


def time_tokenizing(tokenizer, records, max_length: int) -> tuple[list, dict]:
    """Token ids per record, tokenised up front (one `tokenize_all` call per record), and
    the cost of that against one batched call."""
    from wenlan_cli.data.pipeline import tokenize_all

    start = time.perf_counter()
    token_ids = [tokenize_all(tokenizer, r.captions, max_length) for r in records]
    tokenize_s = time.perf_counter() - start
    captions = sum(len(r.captions) for r in records)
    start = time.perf_counter()
    flat = tokenize_all(tokenizer, [c for r in records for c in r.captions], max_length)
    tokenize_batched_s = time.perf_counter() - start
    assert flat == [ids for per_record in token_ids for ids in per_record]
    return token_ids, {
        "captions": captions,
        "seconds": round(tokenize_s, 3),
        "captions_per_s": round(captions / tokenize_s, 1),
        "batched_seconds": round(tokenize_batched_s, 3),
        "estimated_s_for_10k_x5": round(tokenize_s / captions * 50_000, 2),
    }


class StepRunner:
    """The real train step (`Pretrainer.train_step`) of brivl-tiny, timed over `count` batches."""

    def __init__(self, config, tokenizer, batch_size: int) -> None:
        from wenlan_cli.config import TrainConfig
        from wenlan_cli.engine.distributed import DistContext
        from wenlan_cli.models.registry import create_model
        from wenlan_cli.train.loop import Pretrainer

        torch.manual_seed(0)
        self.model = create_model(config, vocab_size=len(tokenizer))
        self.trainer = Pretrainer(TrainConfig(batch_size=batch_size, workers=0), ctx=DistContext())
        self.trainer.model = self.trainer.ddp_model = self.model  # what Pretrainer.build sets
        self.trainer.state.optimizer = self.trainer.make_optimizer(self.model)

    def steps(self, batches, count: int) -> float:
        start = time.perf_counter()
        for _ in range(count):
            self.trainer.train_step(batches)
        return time.perf_counter() - start


def measure_pipeline(make, args: argparse.Namespace, workers: int) -> tuple[float, float]:
    """Samples/s of the DataLoader alone (after its first batches), and the time to the first batch."""
    loader = make(workers)
    start = time.perf_counter()
    it = iter(loader)
    next(it)
    first_batch_s = time.perf_counter() - start
    for _ in range(min(3, args.pipeline_batches)):
        next(it)
    start = time.perf_counter()
    for _ in range(args.pipeline_batches):
        next(it)
    return args.pipeline_batches * args.batch_size / (time.perf_counter() - start), first_batch_s


def measure_training(make, runner: StepRunner, memory_batches, args, workers: int, threads: int | None,
                     default_threads: int) -> tuple[list, list, list]:
    """In-memory and real-data blocks of train steps, alternating (in-memory first and
    last), so that drift of the machine's speed hits both alike: their pairs/s and the
    real blocks' fraction of time spent waiting for a batch."""
    real = TimedBatches(iter(make(workers)))
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        runner.steps(real, 3)  # warm-up: worker start, prefetch
        memory_rates, real_rates, waits = [], [], []
        cycled = itertools.cycle(memory_batches)
        for _ in range(args.rounds):
            memory_rates.append(args.steps * args.batch_size / runner.steps(cycled, args.steps))
            real.wait = 0.0
            elapsed = runner.steps(real, args.steps)
            real_rates.append(args.steps * args.batch_size / elapsed)
            waits.append(real.wait / elapsed)
        memory_rates.append(args.steps * args.batch_size / runner.steps(cycled, args.steps))
    finally:
        torch.set_num_threads(default_threads)
    return memory_rates, real_rates, waits


def measure_variant(variant: str, make, runner: StepRunner, configs, args, default_threads: int) -> list[dict]:
    """One result row per config for the records of one variant."""
    # In-memory batches: real batches of this variant, collated once, cycled.
    warm = iter(make(0))
    memory_batches = [next(warm) for _ in range(4)]
    runner.steps(itertools.cycle(memory_batches), 3)  # warm-up: allocator, optimizer state
    results = []
    for label, workers, threads in configs:
        pipeline, first_batch_s = measure_pipeline(make, args, workers)
        memory_rates, real_rates, waits = measure_training(make, runner, memory_batches, args, workers, threads,
                                                           default_threads)
        # The reference consumption is the in-memory step at the default threads;
        # with M threads configured the in-memory blocks above ran with M threads.
        consume = statistics.median(memory_rates)
        train_real = statistics.median(real_rates)
        results.append({
            "variant": variant,
            "config": label,
            "workers": workers,
            "main_threads": threads or default_threads,
            "pipeline_samples_per_s": round(pipeline, 1),
            "first_batch_s": round(first_batch_s, 2),
            "inmemory_pairs_per_s": round(consume, 1),
            "real_data_pairs_per_s": round(train_real, 1),
            "real_over_inmemory": round(train_real / consume, 3),
            "data_wait_fraction": round(statistics.median(waits), 3),
        })
    return results


def summarize(results: list[dict], variants, default_threads: int, default_label: str) -> list[dict]:
    """Per variant, against the reference consumption (in-memory with the default threads,
    the median over configs): the default config's ratios, the best config and the verdict.
    Also adds the two ratios to each result row."""
    summary = []
    for variant in variants:
        rows = [r for r in results if r["variant"] == variant]
        ref = statistics.median(r["inmemory_pairs_per_s"] for r in rows if r["main_threads"] == default_threads)
        for r in rows:
            r["pipeline_over_consumption"] = round(r["pipeline_samples_per_s"] / ref, 3)
            r["real_over_reference"] = round(r["real_data_pairs_per_s"] / ref, 3)
        d = next((r for r in rows if r["config"] == default_label), None)
        best = max(rows, key=lambda r: r["real_data_pairs_per_s"])
        summary.append({
            "variant": variant,
            "reference_inmemory_pairs_per_s": ref,
            "default_config": default_label,
            "default_pipeline_over_consumption": d and d["pipeline_over_consumption"],
            "default_real_over_reference": d and d["real_over_reference"],
            "best_config": best["config"],
            "best_real_over_reference": best["real_over_reference"],
            "met": bool(d) and d["pipeline_over_consumption"] >= 1.2 and d["real_over_reference"] >= 1 / 1.2,
        })
    return summary


def run(root: Path, args: argparse.Namespace, default_threads: int) -> dict:
    from wenlan_cli.data.pipeline import ImageSettings, PairCollator, PairDataset, PairSampler
    from wenlan_cli.models.registry import get_model_config
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab
    from wenlan_cli.train.loop import default_workers

    setup_start = time.perf_counter()
    records, variants = build_variants(root, args)
    setup_s = time.perf_counter() - setup_start
    config = get_model_config("brivl-tiny")
    settings = ImageSettings.from_config(config.image)
    tokenizer = tokenizer_from_vocab(build_char_vocab(c for r in records for c in r.captions))
    token_ids, tokenize = time_tokenizing(tokenizer, records, config.text.max_length)
    collator = PairCollator(settings.max_regions, tokenizer.pad_token_id or 0)
    caption_counts = [len(r.captions) for r in records]
    runner = StepRunner(config, tokenizer, args.batch_size)

    configs = [parse_config(c.strip(), default_workers()) for c in args.configs.split(",") if c.strip()]
    configs = list(dict.fromkeys(configs))  # "default" may repeat an explicit config
    results = []
    for variant, variant_records in variants.items():
        dataset = PairDataset(variant_records, token_ids, settings)

        def make(workers: int, dataset=dataset) -> DataLoader:
            sampler = PairSampler(caption_counts, args.batch_size, seed=0)
            return make_loader(dataset, sampler, collator, args.batch_size, workers)

        results.extend(measure_variant(variant, make, runner, configs, args, default_threads))
    summary = summarize(results, variants, default_threads, f"w{default_workers()}")
    return {
        "benchmark": "data",
        "quick": args.quick,
        "threads": default_threads,
        "cpus": os.cpu_count(),
        "default_workers": default_workers(),
        "batch_size": args.batch_size,
        "records": len(records),
        "rounds": args.rounds,
        "steps_per_block": args.steps,
        "tokenize": tokenize,
        "results": results,
        "summary": summary,
        "setup_s": round(setup_s, 1),
        "target_pipeline_over_consumption": 1.2,
        "met": all(s["met"] for s in summary),
    }


def main() -> None:
    args = parse_args()
    default_threads = torch.get_num_threads()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args.workdir, args, default_threads)))
        return
    with tempfile.TemporaryDirectory(prefix="wenlan-data-bench-") as tmp:
        print(json.dumps(run(Path(tmp), args, default_threads)))

if __name__ == "__main__":
    main()
