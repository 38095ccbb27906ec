"""The training split as a stream of webdataset shards (``--dataset webdataset``).

What a trainer needs from a training split, without holding it: the number of images
and the batches of an epoch (for the plan), the characters of its captions (for a
from-scratch vocabulary, from the index's counts), and a DataLoader that starts at any
batch. Kept apart from the trainers so that each takes it: `Pretrainer` with its text
tower's tokenizer and length, `finetune-caption` (through `wenlan_cli.plugin_api`) with
its decoder's tokenizer and `max_positions`; a batch is `PairCollator`'s dict either way.
"""

from __future__ import annotations

from collections import Counter

from ..data.prepare import ImageSettings
from ..data.shards import ShardSplit, parse_meta, resolve_shards
from ..data.stream import DEFAULT_BUFFER, PairBatcher, ShardStream, stream_loader
from ..errors import DataError

# Reading lanes of a run (data/stream.py). Fixed, so that the batches depend neither on
# the DataLoader workers nor on how the global batch is split among processes: any
# worker count that divides a process's lanes gives the same run, and a run may resume
# with another one.
LANES = 8


def usable_workers(requested: int, lanes: int) -> int:
    """The largest worker count <= `requested` that divides `lanes` (0 stays 0)."""
    return max((w for w in range(requested + 1) if w == 0 or lanes % w == 0), default=0)


class ShardTrainData:
    def __init__(self, data_dir: str, split: str = "train") -> None:
        # A truncated shard is counted, not refused: the stream names it when it gets there,
        # stopping the run or, with --skip-bad, counting what it lost (as for indexed shards).
        self.split: ShardSplit = resolve_shards(data_dir, split, partial=True)
        if not self.split.shards:
            raise DataError(f"--data-dir {data_dir} names no {split} shards.")

    @property
    def images(self) -> int:
        return self.split.samples

    def char_counts(self) -> dict[str, int]:
        """Character counts of the captions: from the index, else by reading each sample's JSON."""
        if self.split.char_counts is not None:
            return self.split.char_counts
        from ..data.shards import scan_shard
        from ..models.tokenizer import count_chars

        counts: Counter = Counter()
        for shard in self.split.shards:
            with open(shard.path, "rb") as handle:
                for key, files in scan_shard(shard.path, partial=True):  # a truncated shard: reported by the stream
                    if "json" in files:
                        handle.seek(files["json"][0])
                        try:
                            meta = parse_meta(handle.read(files["json"][1]), f"shard {shard.path}, sample {key}")
                        except DataError:
                            continue  # a bad sample is reported when the stream reaches it
                        count_chars(meta["captions"], counts)
        return counts

    def char_vocab(self) -> list[str]:
        """The character vocabulary of the captions (`build_char_vocab`'s, from the counts)."""
        from ..models.tokenizer import vocab_from_counts

        return vocab_from_counts(self.char_counts())

    def batches_per_epoch(self, batch_size: int, world_size: int = 1) -> int:
        """Steps per pass over the split with `batch_size` per process."""
        return self.stream(None, batch_size=batch_size, seed=0, rank=0, world_size=world_size).batches_per_epoch

    def stream(self, batcher: PairBatcher | None, *, batch_size: int, seed: int, rank: int, world_size: int, start_batch: int = 0) -> ShardStream:
        return ShardStream(
            self.split, batcher, batch_size=batch_size, seed=seed, rank=rank, world_size=world_size,
            lanes=LANES, start_batch=start_batch, buffer=DEFAULT_BUFFER,
        )

    def loader(self, tokenizer, max_length: int, settings: ImageSettings, *, batch_size: int, seed: int, rank: int = 0,
               world_size: int = 1, start_batch: int = 0, workers: int = 0, pin_memory: bool = False):
        """Endless batches of process `rank` from batch `start_batch` on: images decoded and
        captions (one per sample, drawn per epoch) tokenised to `max_length` in the workers."""
        stream = self.stream(PairBatcher(tokenizer, max_length, settings, seed), batch_size=batch_size, seed=seed,
                             rank=rank, world_size=world_size, start_batch=start_batch)
        return stream_loader(stream, usable_workers(workers, stream.own), pin_memory=pin_memory)
