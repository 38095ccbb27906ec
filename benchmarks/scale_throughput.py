"""Samples/s of the training data path alone: the shard stream against the file layout.

`benchmarks/scale.py` runs this in a subprocess per dataset, so that each measurement has
its own memory. It builds the DataLoader `wenlan pretrain` builds for the data (brivl-tiny's
image settings and tokenizer length, a character vocabulary, `--batch-size` 64, the
default workers of this machine), takes one batch (the start), then times `--batches`
more. No model runs: the figure is what the data path can feed, not the step's speed.

    python benchmarks/scale_throughput.py --dataset webdataset --data-dir SHARDS

prints one JSON line: {"dataset", "first_batch_s", "samples_per_s", "batches", "workers"}.
"""

from __future__ import annotations

import argparse
import json
import time

from wenlan_cli.data.pipeline import CaptionTokens, ImageSettings, PairCollator, PairDataset, PairSampler
from wenlan_cli.models.registry import get_model_config
from wenlan_cli.models.tokenizer import tokenizer_from_vocab, vocab_from_counts
from wenlan_cli.train.loop import default_workers
from wenlan_cli.train.shard_data import ShardTrainData


def file_layout_batches(dataset: str, data_dir: str, settings: ImageSettings, max_length: int, batch_size: int, workers: int):
    from torch.utils.data import DataLoader

    from wenlan_cli.data.sources import load_records
    from wenlan_cli.data.table import caption_counts, joined_captions
    from wenlan_cli.models.tokenizer import count_chars_joined

    records = load_records(dataset, data_dir, "train")
    tokenizer = tokenizer_from_vocab(vocab_from_counts(count_chars_joined(joined_captions(records))))
    sampler = PairSampler(caption_counts(records), batch_size, seed=0)
    return iter(DataLoader(
        PairDataset(records, CaptionTokens(records, tokenizer, max_length), settings), batch_size=batch_size, sampler=sampler,
        collate_fn=PairCollator(settings.max_regions, tokenizer.pad_token_id or 0), num_workers=workers,
        persistent_workers=workers > 0,
    ))


def shard_batches(data_dir: str, settings: ImageSettings, max_length: int, batch_size: int, workers: int):
    data = ShardTrainData(data_dir)
    tokenizer = tokenizer_from_vocab(vocab_from_counts(data.char_counts()))
    return iter(data.loader(tokenizer, max_length, settings, batch_size=batch_size, seed=0, rank=0, world_size=1,
                            start_batch=0, workers=workers, pin_memory=False))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=40)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=None)
    args = parser.parse_args()
    config = get_model_config("brivl-tiny")
    settings = ImageSettings.from_config(config.image)
    workers = default_workers() if args.workers is None else args.workers
    start = time.monotonic()
    if args.dataset == "webdataset":
        batches = shard_batches(args.data_dir, settings, config.text.max_length, args.batch_size, workers)
    else:
        batches = file_layout_batches(args.dataset, args.data_dir, settings, config.text.max_length, args.batch_size, workers)
    next(batches)
    first = time.monotonic() - start
    began, samples = time.monotonic(), 0
    for _ in range(args.batches):
        samples += next(batches)["size"]
    seconds = time.monotonic() - began
    print(json.dumps({"dataset": args.dataset, "first_batch_s": round(first, 2), "samples_per_s": round(samples / seconds, 1),
                      "batches": args.batches, "workers": workers}))


if __name__ == "__main__":
    main()
