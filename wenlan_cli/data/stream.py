"""Training pairs streamed from webdataset shards, in bounded memory, resumable exactly.

The order is a pure function of (seed, epoch, process count, lanes), never of timing:

- each epoch the shard list is permuted by the seed and read as one sequence of
  samples; that sequence is cut into ``world_size x lanes`` contiguous, equal (within
  one sample) ranges, one per *lane*. Lane ``l`` of process ``r`` is lane
  ``r * lanes + l``. Ranges are whole shards except at their two ends, so the lanes
  of all processes read disjoint samples and (nearly) disjoint shards;
- a lane shuffles its range through a buffer of `buffer` samples (seeded by seed,
  epoch and lane) and runs on into the next epoch without a gap: a batch may hold the
  last samples of one epoch and the first of the next, and no sample is dropped or
  repeated at the boundary;
- a process's batch ``k`` is the next `batch_size` samples of its lane ``k % lanes``.
  DataLoader worker ``w`` of ``W`` makes the batches ``(k - start) % W == w`` (lanes
  must be a multiple of W, so a lane lives in one worker), and the DataLoader hands
  batches back round-robin from worker 0, that is in order of ``k``.

So the state after ``n`` batches is ``n`` alone: lane ``l`` has given
``ceil((n - l) / lanes) * batch_size`` samples, i.e. an epoch and a position inside it;
a resume replays that lane's epoch to the position without decoding a single image.
Memory holds the buffers and the shard list, not the dataset. Captions are tokenised
per batch, in the worker.
"""

from __future__ import annotations

import hashlib
import random
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from torch.utils.data import IterableDataset, get_worker_info

from ..errors import DataError
from .images import decode_image_bytes
from .pipeline import BadImage, PairCollator, prepare_image, stable_id
from .prepare import ImageSettings
from .records import ImageTextRecord
from .shards import ShardInfo, ShardSplit, check_training_sample

DEFAULT_BUFFER = 256


@dataclass(frozen=True)
class BytesImage:
    """An encoded image held in memory (an `ImageSource`)."""

    data: bytes
    where: str

    def __str__(self) -> str:
        return self.where

    def load(self):
        return decode_image_bytes(self.data, self.where)


@dataclass(frozen=True)
class RawSample:
    """A sample as read from its shard; `files` is None for one that could not be read."""

    uid: str  # "shard name:key", unique in the split
    epoch: int
    files: dict | None
    problem: str = ""


def _rng(*parts) -> random.Random:
    return random.Random("/".join(str(p) for p in parts))


def caption_choice(seed: int, epoch: int, uid: str, count: int) -> int:
    """The caption of a sample in an epoch: seeded by (seed, epoch, sample), not by order."""
    digest = hashlib.blake2b(f"{seed}/{epoch}/{uid}".encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") % max(1, count)


def read_shard_range(shard: ShardInfo, low: int, high: int, epoch: int) -> Iterator[RawSample]:
    """Samples `low`..`high`-1 of a shard (positions by its index count), in order, read
    with webdataset's tar iterators. A truncated or unreadable shard yields one unreadable
    sample for each position it could not give, naming the shard and the last key read."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    name = Path(shard.path).name
    position, last = 0, None
    error = None
    try:
        with open(shard.path, "rb") as handle:
            files = ({**f, "__url__": shard.path} for f in tar_file_iterator(handle))
            for sample in group_by_keys(files):
                if position >= high:
                    break
                key = sample["__key__"]
                last = key
                if position >= low:
                    payload = {k: v for k, v in sample.items() if not k.startswith("__")}
                    yield RawSample(f"{name}:{key}", epoch, payload)
                position += 1
    except (tarfile.TarError, EOFError, OSError, ValueError) as exc:
        error = exc
    if position < high:
        after = f"after sample {last}" if last is not None else "before its first sample"
        why = f" ({error})" if error is not None else ""
        problem = f"shard {shard.path} is truncated {after}{why}: {shard.samples - position} of its {shard.samples} samples are missing."
        for missing in range(max(position, low), high):
            yield RawSample(f"{name}:#{missing}", epoch, None, problem)


def shuffled(items: Iterator[RawSample], size: int, rng: random.Random) -> Iterator[RawSample]:
    """A shuffle buffer of `size` items (1: no shuffling), deterministic for `rng`."""
    buffer: list[RawSample] = []
    for item in items:
        buffer.append(item)
        if len(buffer) >= size:
            i = rng.randrange(len(buffer))
            buffer[i], buffer[-1] = buffer[-1], buffer[i]
            yield buffer.pop()
    while buffer:
        i = rng.randrange(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        yield buffer.pop()


class ShardStream(IterableDataset):
    """Batches of training pairs from `split` for process `rank` of `world_size` (see the
    module doc). Use with ``DataLoader(stream, batch_size=None, num_workers=W)`` where
    `lanes` is a multiple of W (W = 0: the main process makes every lane's batches).
    Each batch is `PairCollator`'s dict plus ``keys`` (the samples, "shard:key") and
    ``epochs`` (the epoch each sample belongs to)."""

    def __init__(
        self, split: ShardSplit, batcher: "PairBatcher | None", *, batch_size: int, seed: int, rank: int = 0,
        world_size: int = 1, lanes: int = 1, start_batch: int = 0, buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self.shards = list(split.shards)
        self.total = split.samples
        self.batcher = batcher
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lanes = max(1, lanes)
        self.start_batch = start_batch
        self.buffer = max(1, buffer)
        if self.total < batch_size * world_size:
            raise DataError(
                f"the training shards hold {self.total} samples, fewer than one global batch "
                f"({batch_size * world_size}); lower --batch-size."
            )
        if self.total < world_size * self.lanes:
            raise DataError(f"the training shards hold {self.total} samples, fewer than the {world_size * self.lanes} reading lanes; use fewer --workers.")

    @property
    def batches_per_epoch(self) -> int:
        """Batches a process takes per pass over the data (the plan's epoch)."""
        return max(1, self.total // (self.batch_size * self.world_size))

    def epoch_shards(self, epoch: int) -> list[ShardInfo]:
        order = list(self.shards)
        _rng(self.seed, "shards", epoch).shuffle(order)
        return order

    def lane_range(self, lane: int) -> tuple[int, int]:
        """[start, stop) of lane `lane` (global) in an epoch's sample sequence."""
        count = self.world_size * self.lanes
        return lane * self.total // count, (lane + 1) * self.total // count

    def lane_epoch(self, lane: int, epoch: int) -> Iterator[RawSample]:
        """Lane `lane`'s samples of `epoch`, shuffled through the buffer."""
        start, stop = self.lane_range(lane)

        def ordered():
            offset = 0
            for shard in self.epoch_shards(epoch):
                low, high = max(start - offset, 0), min(stop - offset, shard.samples)
                if low < high:
                    yield from read_shard_range(shard, low, high, epoch)
                offset += shard.samples
                if offset >= stop:
                    break

        return shuffled(ordered(), self.buffer, _rng(self.seed, "buffer", epoch, lane))

    def lane_samples(self, lane: int, consumed: int) -> Iterator[RawSample]:
        """Lane `lane`'s endless sample stream after its first `consumed` samples."""
        start, stop = self.lane_range(lane)
        size = stop - start
        epoch, skip = divmod(consumed, size)
        while True:
            items = self.lane_epoch(lane, epoch)
            for _ in range(skip):
                next(items)
            yield from items
            epoch, skip = epoch + 1, 0

    def lane_batches(self, lane: int, consumed_batches: int) -> Iterator[list[RawSample]]:
        samples = self.lane_samples(self.rank * self.lanes + lane, consumed_batches * self.batch_size)
        while True:
            yield [next(samples) for _ in range(self.batch_size)]

    def raw_batches(self) -> Iterator[list[RawSample]]:
        """This worker's batches (or all, in the main process), as raw samples, in order."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if self.lanes % workers:
            raise DataError(f"{workers} DataLoader workers cannot share {self.lanes} reading lanes; the lanes must be a multiple of the workers.")
        n, lanes = self.start_batch, self.lanes
        iterators: dict[int, Iterator[list[RawSample]]] = {}
        k = n + worker  # the DataLoader asks worker 0 first: it makes batch n
        while True:
            lane = k % lanes
            if lane not in iterators:
                iterators[lane] = self.lane_batches(lane, (n - lane + lanes - 1) // lanes if n > lane else 0)
            yield next(iterators[lane])
            k += workers

    def __iter__(self):
        for raw in self.raw_batches():
            yield self.batcher(raw) if self.batcher is not None else raw


class PairBatcher:
    """Raw samples -> a training batch: decode and place boxes, pick each sample's caption
    for its epoch, tokenise the batch's captions in one call. Picklable (it runs in the
    DataLoader workers)."""

    def __init__(self, tokenizer, max_length: int, settings: ImageSettings, seed: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.settings = settings
        self.seed = seed
        self.collate = PairCollator(settings.max_regions, tokenizer.pad_token_id or 0)

    def item(self, index: int, sample: RawSample):
        if sample.files is None:
            return BadImage(index, sample.problem), None
        shard, _, key = sample.uid.rpartition(":")
        where = f"shard {shard}, sample {key}"
        try:
            data, meta = check_training_sample(sample.files, where)
            captions = [c for c in meta["captions"] if c.strip()]
            caption = captions[caption_choice(self.seed, sample.epoch, sample.uid, len(captions))]
            record = ImageTextRecord(meta["id"], Path(shard), captions, meta.get("boxes"), image_source=BytesImage(data, where))
            pixels, boxes = prepare_image(record, self.settings)
        except DataError as exc:
            return BadImage(index, str(exc)), None
        return (pixels, boxes, stable_id(meta["id"]), stable_id(caption)), caption

    def __call__(self, raw: list[RawSample]) -> dict:
        prepared = [self.item(i, s) for i, s in enumerate(raw)]
        captions = [c for _, c in prepared if c is not None]
        ids = self.tokenizer(captions, truncation=True, max_length=self.max_length, padding=False)["input_ids"] if captions else []
        items, it = [], iter(ids)
        for item, caption in prepared:
            if isinstance(item, BadImage):
                items.append(item)
            else:
                pixels, boxes, image_id, caption_hash = item
                items.append((pixels, boxes, next(it), image_id, caption_hash))
        batch = self.collate(items)
        batch["keys"] = [s.uid for s in raw]
        batch["epochs"] = [s.epoch for s in raw]
        return batch


def stream_loader(stream: ShardStream, workers: int, pin_memory: bool = False):
    """The DataLoader over `stream` (batches come whole from the stream)."""
    from torch.utils.data import DataLoader

    return DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    )

