"""From records to model batches: image decoding and boxes, tokenising, sampling.

Images travel from DataLoader workers as uint8 tensors and are normalised on the
model's device; captions are tokenised in the workers too, a batch's in one call of the
tokenizer (`CaptionTokens` handed to `PairDataset`, tokenised by `PairCollator`), so
that a run starts without tokenising its whole training split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from ..errors import DataError
from .prepare import ImageSettings, load_record_image, prepare_image_array, region_boxes  # noqa: F401 (re-exported)
from .records import ImageTextRecord


def prepare_image(record: ImageTextRecord, settings: ImageSettings) -> tuple[torch.Tensor, np.ndarray]:
    """Decode, resize to the square input size, and place the boxes: (3, S, S) uint8
    (`prepare.prepare_image_array`, which the onnxruntime path shares)."""
    pixels, boxes = prepare_image_array(record, settings)
    return torch.from_numpy(pixels).permute(2, 0, 1), boxes


def tokenize_all(tokenizer, texts: Sequence[str], max_length: int, batch_size: int = 4096) -> list[list[int]]:
    """Token ids of every text (with [CLS]/[SEP]), truncated to `max_length`, no padding."""
    ids: list[list[int]] = []
    for start in range(0, len(texts), batch_size):
        chunk = list(texts[start : start + batch_size])
        ids.extend(tokenizer(chunk, truncation=True, max_length=max_length, padding=False)["input_ids"])
    return ids


class CaptionTokens:
    """Token ids of each record's captions, tokenised when asked for: `tokens[i][c]` is
    record i's caption c as `tokenize_all` gives it. A drop-in for the nested lists that
    `PairDataset` takes; given this, `PairDataset` hands each pair's caption text on
    (`CaptionText`) and `PairCollator` tokenises a batch's captions in one call, in the
    DataLoader worker that loads the batch (as open_clip does), instead of the main
    process tokenising every caption of the split before the first step (minutes and
    gigabytes of Python lists at 30M pairs). The ids are the same either way: the fast
    tokenizer encodes each text of a call on its own. Picklable (the fast tokenizer
    is), so it travels to spawned workers too."""

    def __init__(self, records: Sequence[ImageTextRecord], tokenizer, max_length: int) -> None:
        self.records = records
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> list[list[int]]:
        captions = getattr(self.records, "image_captions", None)
        texts = captions(index) if captions is not None else self.records[index].captions
        return tokenize_all(self.tokenizer, texts, self.max_length)

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of `texts` (one batch's captions), in one tokenizer call per 4096."""
        return tokenize_all(self.tokenizer, texts, self.max_length)


@dataclass(frozen=True)
class CaptionText:
    """A pair's caption still to be tokenised, by `tokens` (see `CaptionTokens`); it never
    leaves the worker: `PairCollator` replaces it by its ids."""

    text: str
    tokens: CaptionTokens


def tokenize_pending(ids: Sequence) -> list:
    """`ids` with every `CaptionText` replaced by its token ids, all of one `CaptionTokens`
    tokenised in one call (`PairCollator`'s batch); lists of ids pass through."""
    out = list(ids)
    pending: dict[int, tuple[CaptionTokens, list[int]]] = {}
    for k, item in enumerate(out):
        if isinstance(item, CaptionText):
            pending.setdefault(id(item.tokens), (item.tokens, []))[1].append(k)
    for tokens, positions in pending.values():
        for k, row in zip(positions, tokens.tokenize([out[k].text for k in positions])):
            out[k] = row
    return out


@dataclass(frozen=True)
class BadImage:
    """An image that failed to decode; travels to the main process, which decides
    (per --skip-bad) whether it is an error, so the message stays one clean sentence."""

    index: int
    message: str


def stable_id(text: str) -> int:
    """A non-negative 63-bit id of `text`, the same in every process and run (Python's
    `hash` is salted per process, and ranks must agree on the ids they gather)."""
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


class PairDataset(Dataset):
    """Map-style dataset indexed by (record index, caption index) pairs. Each pair also
    carries its image's id and its caption's hash (`stable_id`), so the queue loss can
    tell a query's own image or caption among the queued keys. `token_ids` is nested
    lists (`token_ids[i][c]`) or a `CaptionTokens`, whose captions `PairCollator`
    tokenises a batch at a time."""

    def __init__(self, records: Sequence[ImageTextRecord], token_ids: list[list[list[int]]], settings: ImageSettings) -> None:
        self.records = records
        self.token_ids = token_ids
        self.settings = settings

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, key: tuple[int, int]):
        index, caption = key
        record = self.records[index]  # built once (a RecordTable builds it from its columns)
        try:
            pixels, boxes = prepare_image(record, self.settings)
        except DataError as exc:
            return BadImage(index, str(exc))
        text = record.captions[caption]
        ids = CaptionText(text, self.token_ids) if isinstance(self.token_ids, CaptionTokens) else self.token_ids[index][caption]
        return pixels, boxes, ids, stable_id(record.image_id), stable_id(text)


class ImageDataset(Dataset):
    """Images only (evaluation and `encode`), in record order."""

    def __init__(self, records: Sequence[ImageTextRecord], settings: ImageSettings) -> None:
        self.records = records
        self.settings = settings

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int):
        try:
            pixels, boxes = prepare_image(self.records[index], self.settings)
        except DataError as exc:
            return BadImage(index, str(exc))
        return index, pixels, boxes


def pad_boxes(box_list: Sequence[np.ndarray], max_regions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, R, 4) boxes and (B, R) mask; padding repeats the whole-image box."""
    b = len(box_list)
    boxes = torch.zeros(b, max_regions, 4)
    mask = torch.zeros(b, max_regions, dtype=torch.bool)
    for i, arr in enumerate(box_list):
        n = len(arr)
        boxes[i, :n] = torch.from_numpy(arr)
        boxes[i, n:] = boxes[i, 0]
        mask[i, :n] = True
    return boxes, mask


def pad_token_ids(ids: Sequence[Sequence[int]], pad_id: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence: (B, L) ids and attention mask."""
    length = max(len(x) for x in ids)
    input_ids = torch.full((len(ids), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(ids), length), dtype=torch.long)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, : len(seq)] = 1
    return input_ids, mask


class ImageCollator:
    """Batches of `ImageDataset` items: (pixels, boxes, box mask, record indices, bad),
    `bad` being (index, message) of the unreadable images; pixels etc. are None when the
    whole batch is bad."""

    def __init__(self, max_regions: int) -> None:
        self.max_regions = max_regions

    def __call__(self, items):
        good = [it for it in items if not isinstance(it, BadImage)]
        bad = [(it.index, it.message) for it in items if isinstance(it, BadImage)]
        if not good:
            return None, None, None, [], bad
        indices, pixels, boxes = zip(*good)
        box_tensor, box_mask = pad_boxes(boxes, self.max_regions)
        return torch.stack(pixels), box_tensor, box_mask, list(indices), bad


class PairCollator:
    """Stacks pairs into a batch; images that failed to decode are listed in `bad`.
    `image_ids` and `caption_hashes` are (B,) int64. Captions that come as `CaptionText`
    are tokenised here, the batch's in one call (`tokenize_pending`)."""

    def __init__(self, max_regions: int, pad_id: int = 0) -> None:
        self.max_regions = max_regions
        self.pad_id = pad_id

    def __call__(self, items):
        kept = [item for item in items if not isinstance(item, BadImage)]
        bad = [item for item in items if isinstance(item, BadImage)]
        if not kept:
            return {"bad": bad, "size": 0}
        pixels, boxes, ids, image_ids, caption_hashes = zip(*kept)
        box_tensor, box_mask = pad_boxes(boxes, self.max_regions)
        input_ids, attention_mask = pad_token_ids(tokenize_pending(ids), self.pad_id)
        return {
            "images": torch.stack(pixels),
            "boxes": box_tensor,
            "box_mask": box_mask,
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "image_ids": torch.tensor(image_ids, dtype=torch.long),
            "caption_hashes": torch.tensor(caption_hashes, dtype=torch.long),
            "bad": bad,
            "size": len(kept),
        }


def normalize_images(images: torch.Tensor, mean, std, dtype=torch.float32) -> torch.Tensor:
    """uint8 (B, 3, S, S) -> normalised float, on whatever device `images` is on.
    Computed in place in one new tensor (a batch-sized temporary less)."""
    mean_t = torch.tensor(mean, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    std_t = torch.tensor(std, device=images.device, dtype=dtype).view(1, 3, 1, 1) * 255
    return images.to(dtype, copy=True).sub_(mean_t).div_(std_t)


class PairSampler(Sampler):
    """Deterministic (record, caption) pairs for training, sharded across ranks.

    Each epoch is a seeded permutation of the records, each with one caption drawn by
    the same seed. The global batch `world * batch_size` is cut into contiguous slices,
    one per rank, so N ranks x B see exactly the pairs that 1 rank x N*B would see, in
    the same order once gathered. Starting at `start_batch` resumes mid-epoch.
    """

    def __init__(self, caption_counts: Sequence[int], batch_size: int, *, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0) -> None:
        self.caption_counts = list(caption_counts)
        self.batch_size = batch_size
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.global_batch = batch_size * world_size
        if len(self.caption_counts) < self.global_batch:
            raise DataError(
                f"the training split has {len(self.caption_counts)} images, fewer than one global batch "
                f"({self.global_batch}); lower --batch-size."
            )
        self.batches_per_epoch = len(self.caption_counts) // self.global_batch
        self.start_batch = start_batch

    def epoch_pairs(self, epoch: int) -> list[tuple[int, int]]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.caption_counts), generator=generator)
        draws = torch.rand(len(order), generator=generator)
        # Caption min(int(u * count), count - 1), computed in float64 over the whole epoch: the
        # float32 draw times the count, floored, is what Python's float arithmetic gives.
        counts = torch.as_tensor(self.caption_counts, dtype=torch.float64)[order]
        captions = torch.minimum((draws.double() * counts).floor(), counts - 1).long()
        return list(zip(order.tolist(), captions.tolist()))

    def __iter__(self) -> Iterator[tuple[int, int]]:
        batch = self.start_batch
        while True:
            epoch, within = divmod(batch, self.batches_per_epoch)
            pairs = self.epoch_pairs(epoch)
            for b in range(within, self.batches_per_epoch):
                start = b * self.global_batch + self.rank * self.batch_size
                yield from pairs[start : start + self.batch_size]
            batch = (epoch + 1) * self.batches_per_epoch
