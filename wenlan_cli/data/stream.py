"""Training pairs streamed from webdataset shards, in bounded memory, resumable exactly.

The order is a pure function of (seed, epoch, global batch), never of timing, of the
DataLoader workers or of how the global batch is split among processes:

- the data is read through `lanes` (8) *lanes*. Each global batch (``batch_size x
  world_size``) is cut into 8 contiguous chunks, chunk ``l`` coming from lane ``l``;
  process ``r`` owns the lanes of its slice of the global batch, so N processes x B see
  exactly the pairs 1 process x N*B sees, as the file layouts do (lanes fall back to
  one per process when the process count does not divide 8);
- each epoch the shard list is permuted by the seed and read as one sequence of
  samples, cut into one contiguous range per lane in proportion to its chunk. Ranges
  are whole shards except at their two ends, so lanes, hence processes and DataLoader
  workers, read disjoint samples and (nearly) disjoint shards;
- a lane shuffles its range through a buffer of `buffer` samples (seeded by seed,
  epoch and lane) and runs on into the next epoch without a gap: a batch may hold the
  last samples of one epoch and the first of the next, and no sample is dropped or
  repeated at the boundary;
- DataLoader worker ``w`` of ``W`` reads the ``w``-th contiguous ``1/W`` of the process's
  lanes and yields, step by step, their chunks joined into one part of the batch (decoded
  and tokenised in one call); the DataLoader hands results back round-robin from worker 0,
  which is the order of the lanes, and `StreamBatches` joins a step's ``W`` parts into the
  batch (with no workers, the main process makes the whole batch at once).

So the state after ``n`` steps is ``n`` alone: lane ``l`` has given ``n x chunk(l)``
samples, i.e. an epoch and a position inside it; a resume replays that lane's shuffle
buffer on sample positions alone and reads, by byte range, only the samples the buffer
then holds, so it reads nothing it has passed. Memory holds the buffers and the shard
list, not the dataset. Captions are tokenised per chunk, in the workers.
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
from .images import decode_image_bytes, decode_image_bytes_resized
from .pipeline import BadImage, PairCollator, prepare_image, stable_id
from .prepare import ImageSettings
from .records import ImageTextRecord
from .shards import ShardInfo, ShardSplit, check_training_sample, scan_shard_status

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

    def load_resized(self, size: int):
        """(image at size x size, displayed size), as `load_image_resized` gives the file."""
        return decode_image_bytes_resized(self.data, self.where, size)


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
        problem = f"shard {shard.path} is truncated or unreadable {after}{why}: {shard.samples - position} of its {shard.samples} samples are missing."
        for missing in range(max(position, low), high):
            yield RawSample(f"{name}:#{missing}", epoch, None, problem)


def shuffled(items: Iterator[RawSample], size: int, rng: random.Random, buffer: list | None = None) -> Iterator[RawSample]:
    """A shuffle buffer of `size` items (1: no shuffling), deterministic for `rng`; `buffer`
    continues from a state `replay_buffer` found."""
    buffer = [] if buffer is None else buffer
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


def replay_buffer(count: int, size: int, rng: random.Random, outputs: int) -> tuple[list[int], int]:
    """`shuffled`'s state after `outputs` items of a sequence of `count`, found on positions
    alone (the order depends on positions, not on contents): the positions the buffer then
    holds, in its order, and the next position to read. `rng` is left as `shuffled` leaves it."""
    buffer: list[int] = []
    position = done = 0
    while done < outputs:
        if position < count:
            buffer.append(position)
            position += 1
            if len(buffer) < size:
                continue
        i = rng.randrange(len(buffer))
        buffer[i], buffer[-1] = buffer[-1], buffer[i]
        buffer.pop()
        done += 1
    return buffer, position


def read_positions(shard: ShardInfo, positions: list[int], epoch: int) -> dict[int, RawSample]:
    """Samples at `positions` of a shard, read by byte range from its headers; a shard that
    cannot be read whole is read in order instead, as `read_shard_range` reads it."""
    samples, problem = scan_shard_status(shard.path)
    if problem is not None or len(samples) < shard.samples:
        low, high, chosen = min(positions), max(positions) + 1, set(positions)
        return {p: s for p, s in zip(range(low, high), read_shard_range(shard, low, high, epoch)) if p in chosen}
    name = Path(shard.path).name
    found = {}
    with open(shard.path, "rb") as handle:
        for position in positions:
            key, members = samples[position]
            files = {}
            for ext, (offset, size) in members.items():
                handle.seek(offset)
                files[ext] = handle.read(size)
            found[position] = RawSample(f"{name}:{key}", epoch, files)
    return found


def choose_lanes(lanes: int, world_size: int, global_batch: int) -> int:
    """The number of lanes of a run: `lanes` when the processes can share them equally and
    every lane gets a sample of each global batch, else one lane per process."""
    if lanes % world_size == 0 and global_batch >= lanes:
        return lanes
    return world_size


class ShardStream(IterableDataset):
    """Chunks of training pairs from `split` for process `rank` of `world_size` (see the
    module doc); `StreamBatches` joins a process's chunks into its batches. Use with
    ``DataLoader(stream, batch_size=None, num_workers=W)`` where W divides the process's
    lanes (W = 0: the main process reads every lane). Each chunk is `PairCollator`'s dict
    plus ``keys`` (the samples, "shard:key") and ``epochs`` (each sample's epoch)."""

    def __init__(
        self, split: ShardSplit, batcher: "PairBatcher | None", *, batch_size: int, seed: int, rank: int = 0,
        world_size: int = 1, lanes: int = 8, start_batch: int = 0, buffer: int = DEFAULT_BUFFER,
    ) -> None:
        self.shards = list(split.shards)
        self.total = split.samples
        self.batcher = batcher
        self.batch_size = batch_size
        self.global_batch = batch_size * world_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.lanes = choose_lanes(max(1, lanes), world_size, self.global_batch)
        self.own = self.lanes // world_size  # lanes of this process: rank * own ... rank * own + own - 1
        self.start_batch = start_batch
        self.buffer = max(1, buffer)
        if self.total < self.global_batch:
            raise DataError(
                f"the training shards hold {self.total} samples, fewer than one global batch "
                f"({self.global_batch}); lower --batch-size."
            )

    @property
    def batches_per_epoch(self) -> int:
        """Steps per pass over the data (the plan's epoch)."""
        return max(1, self.total // self.global_batch)

    def chunk_size(self, lane: int) -> int:
        """Lane `lane`'s share of every global batch: its contiguous slice of the batch."""
        return self.global_batch * (lane + 1) // self.lanes - self.global_batch * lane // self.lanes

    def epoch_shards(self, epoch: int) -> list[ShardInfo]:
        order = list(self.shards)
        _rng(self.seed, "shards", epoch).shuffle(order)
        return order

    def lane_range(self, lane: int) -> tuple[int, int]:
        """[start, stop) of lane `lane` in an epoch's sample sequence, in proportion to its chunk."""
        start = self.total * (self.global_batch * lane // self.lanes) // self.global_batch
        stop = self.total * (self.global_batch * (lane + 1) // self.lanes) // self.global_batch
        return start, stop

    def ordered(self, epoch: int, first: int, stop: int) -> Iterator[RawSample]:
        """Positions `first`..`stop`-1 of `epoch`'s sample sequence, read in order."""
        offset = 0
        for shard in self.epoch_shards(epoch):
            low, high = max(first - offset, 0), min(stop - offset, shard.samples)
            if low < high:
                yield from read_shard_range(shard, low, high, epoch)
            offset += shard.samples
            if offset >= stop:
                break

    def held_samples(self, epoch: int, positions: list[int]) -> list[RawSample]:
        """The samples at `positions` of `epoch`'s sequence, in that order, read by byte range."""
        wanted: dict[int, RawSample] = {}
        offset = 0
        for shard in self.epoch_shards(epoch):
            inside = [p - offset for p in positions if offset <= p < offset + shard.samples]
            if inside:
                wanted.update({offset + p: s for p, s in read_positions(shard, inside, epoch).items()})
            offset += shard.samples
        return [wanted[p] for p in positions]

    def lane_epoch(self, lane: int, epoch: int, skip: int = 0) -> Iterator[RawSample]:
        """Lane `lane`'s samples of `epoch`, shuffled through the buffer, after its first `skip`.
        The buffer's state at `skip` is replayed on positions (`replay_buffer`) and only the
        samples it holds are read, so a resume reads no data it has passed."""
        start, stop = self.lane_range(lane)
        rng = _rng(self.seed, "buffer", epoch, lane)
        held, position = replay_buffer(stop - start, self.buffer, rng, skip)
        buffer = self.held_samples(epoch, [start + p for p in held]) if held else []
        return shuffled(self.ordered(epoch, start + position, stop), self.buffer, rng, buffer)

    def lane_samples(self, lane: int, consumed: int) -> Iterator[RawSample]:
        """Lane `lane`'s endless sample stream after its first `consumed` samples."""
        start, stop = self.lane_range(lane)
        size = stop - start
        if size <= 0:
            raise DataError(f"the training shards hold {self.total} samples, too few for {self.lanes} reading lanes.")
        epoch, skip = divmod(consumed, size)
        while True:
            yield from self.lane_epoch(lane, epoch, skip)
            epoch, skip = epoch + 1, 0

    def lane_chunks(self, lane: int) -> Iterator[list[RawSample]]:
        size = self.chunk_size(lane)
        samples = self.lane_samples(lane, self.start_batch * size)
        while True:
            yield [next(samples) for _ in range(size)]

    def raw_chunks(self) -> Iterator[list[RawSample]]:
        """This worker's part of each batch (or the whole batch, in the main process): the
        chunks of its contiguous lanes, joined in lane order."""
        info = get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        if self.own % workers:
            raise DataError(f"{workers} DataLoader workers cannot share {self.own} reading lanes; use a --workers that divides {self.own}.")
        per = self.own // workers
        iterators = [self.lane_chunks(self.rank * self.own + worker * per + j) for j in range(per)]
        while True:
            yield [sample for chunks in iterators for sample in next(chunks)]

    def __iter__(self):
        for raw in self.raw_chunks():
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


def merge_chunks(chunks: list[dict], pad_id: int = 0) -> dict:
    """One batch from a process's chunks, in order (captions padded to the longest)."""
    import torch

    from .pipeline import pad_token_ids

    kept = [c for c in chunks if c["size"]]
    batch = {"bad": [b for c in chunks for b in c["bad"]], "size": sum(c["size"] for c in chunks),
             "keys": [k for c in chunks for k in c["keys"]], "epochs": [e for c in chunks for e in c["epochs"]]}
    if not kept:
        return batch
    for name in ("images", "boxes", "box_mask", "image_ids", "caption_hashes"):
        batch[name] = torch.cat([c[name] for c in kept])
    rows = [row[mask.bool()].tolist() for c in kept for row, mask in zip(c["input_ids"], c["attention_mask"])]
    batch["input_ids"], batch["attention_mask"] = pad_token_ids(rows, pad_id)
    return batch


class StreamBatches:
    """A process's batches: one part per DataLoader worker (1 without workers) per step,
    joined (`merge_chunks`), from a DataLoader over its `ShardStream`. Raw parts (no
    batcher) are joined as lists."""

    def __init__(self, loader, parts: int, pad_id: int = 0) -> None:
        self.loader = loader
        self.parts = parts
        self.pad_id = pad_id

    def __iter__(self):
        chunks = iter(self.loader)
        while True:
            parts = [next(chunks) for _ in range(self.parts)]
            if len(parts) == 1:
                yield parts[0]
            else:
                yield merge_chunks(parts, self.pad_id) if isinstance(parts[0], dict) else [s for p in parts for s in p]


def stream_loader(stream: ShardStream, workers: int, pin_memory: bool = False) -> StreamBatches:
    """The process's batches from `stream` (DataLoader workers read disjoint lanes)."""
    from torch.utils.data import DataLoader

    loader = DataLoader(
        stream, batch_size=None, num_workers=workers, pin_memory=pin_memory,
        persistent_workers=workers > 0, prefetch_factor=4 if workers > 0 else None,
    )
    pad_id = (stream.batcher.tokenizer.pad_token_id or 0) if stream.batcher is not None else 0
    return StreamBatches(loader, max(1, workers), pad_id)
