"""Images and texts to L2-normalised float32 vectors with an ONNX bundle on onnxruntime.

The counterpart of `wenlan_cli.encode` without torch: the same decoding, resizing, boxes
and normalisation (`data.prepare`), the same tokenizer (its tokenizer.json through the
`tokenizers` library), rows in input order, unreadable images an error or, with
`skip_bad`, left out and reported.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from ..data.prepare import normalize_array, pad_boxes_array, prepare_image_array
from ..data.records import ImageTextRecord
from ..errors import DataError
from .bundle import OnnxBundle


@dataclass
class ImageVectors:
    embeddings: np.ndarray  # (kept, D) float32, L2-normalised
    kept: list[int]  # index into the input records of each row
    failures: list[tuple[int, str]] = field(default_factory=list)


def _prepare(record: ImageTextRecord, settings):
    try:
        return prepare_image_array(record, settings)
    except DataError as exc:
        return exc


def image_inputs(bundle: OnnxBundle, prepared: Sequence[tuple[np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
    """The image graph's feed for decoded (pixels, boxes) pairs."""
    settings = bundle.settings
    pixels = normalize_array(np.stack([p for p, _ in prepared]), settings.mean, settings.std)
    boxes, mask = pad_boxes_array([b for _, b in prepared], settings.max_regions)
    return {"images": pixels, "boxes": boxes, "box_mask": mask}


def encode_images(
    bundle: OnnxBundle,
    records: Sequence[ImageTextRecord],
    *,
    batch_size: int = 64,
    workers: int = 0,
    skip_bad: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> ImageVectors:
    """Encode `records`' images; with `workers` > 0, decoding runs in that many threads
    (PIL releases the GIL while it decodes and resizes) beside onnxruntime."""
    settings = bundle.settings
    session = bundle.session("image")
    embeddings = np.empty((len(records), bundle.embed_dim), dtype=np.float32)
    kept: list[int] = []
    failures: list[tuple[int, str]] = []
    pool = ThreadPoolExecutor(workers) if workers > 0 else None
    mapper = pool.map if pool is not None else map
    try:
        for start in range(0, len(records), batch_size):
            chunk = range(start, min(start + batch_size, len(records)))
            prepared, indices = [], []
            for i, item in zip(chunk, mapper(_prepare, [records[i] for i in chunk], [settings] * len(chunk))):
                if isinstance(item, DataError):
                    if not skip_bad:
                        raise DataError(f"{item} (pass --skip-bad to leave unreadable images out)")
                    failures.append((i, str(item)))
                else:
                    prepared.append(item)
                    indices.append(i)
            if prepared:
                out = session.run(None, image_inputs(bundle, prepared))[0]
                embeddings[len(kept) : len(kept) + len(indices)] = out
                kept.extend(indices)
            if on_batch is not None:
                on_batch(len(chunk))
    finally:
        if pool is not None:
            pool.shutdown()
    if len(kept) < len(records):
        embeddings = embeddings[: len(kept)].copy()
    return ImageVectors(embeddings=embeddings, kept=kept, failures=failures)


def tokenize(bundle: OnnxBundle, texts: Sequence[str]) -> list[list[int]]:
    """Token ids of every text (with [CLS]/[SEP]), truncated to max_length, no padding."""
    return [encoding.ids for encoding in bundle.tokenizer.encode_batch(list(texts))]


def text_inputs(bundle: OnnxBundle, ids: Sequence[Sequence[int]]) -> dict[str, np.ndarray]:
    """The text graph's feed: ids padded to the longest (or, for a converted BriVL whose
    BERT sees the padding, to max_length) and the attention mask."""
    length = bundle.max_length if bundle.pad_to_max_length else max(len(x) for x in ids)
    input_ids = np.full((len(ids), length), bundle.pad_id, dtype=np.int64)
    mask = np.zeros((len(ids), length), dtype=np.int64)
    for i, seq in enumerate(ids):
        input_ids[i, : len(seq)] = seq
        mask[i, : len(seq)] = 1
    return {"input_ids": input_ids, "attention_mask": mask}


def encode_texts(
    bundle: OnnxBundle,
    texts: Sequence[str],
    *,
    batch_size: int = 256,
    on_batch: Callable[[int], None] | None = None,
) -> np.ndarray:
    """(len(texts), D) float32 embeddings; batches are formed from texts sorted by length,
    as `wenlan_cli.encode.encode_texts` does, and returned in input order."""
    session = bundle.session("text")
    ids = tokenize(bundle, texts)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = np.zeros((len(ids), bundle.embed_dim), dtype=np.float32)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        out[chunk] = session.run(None, text_inputs(bundle, [ids[i] for i in chunk]))[0]
        if on_batch is not None:
            on_batch(len(chunk))
    return out
