"""Images and texts to L2-normalised float32 vectors with a trained BriVL.

Rows come back in input order; images that fail to decode are either an error or,
with `skip_bad`, left out and reported with their index.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch.utils.data import DataLoader

from .engine.device import autocast_context, threads_beside_workers
from .data.pipeline import ImageCollator, ImageDataset, ImageSettings, normalize_images, pad_token_ids, tokenize_all
from .data.records import ImageTextRecord
from .errors import DataError


@dataclass
class ImageEncoding:
    embeddings: torch.Tensor  # (kept, D) float32, L2-normalised
    kept: list[int]  # index into the input records of each row
    failures: list[tuple[int, str]] = field(default_factory=list)


@torch.no_grad()
def encode_images(
    model,
    records: Sequence[ImageTextRecord],
    settings: ImageSettings,
    *,
    device: torch.device,
    batch_size: int = 128,
    workers: int = 0,
    skip_bad: bool = False,
    precision: str = "fp32",
    on_batch: Callable[[int], None] | None = None,
) -> ImageEncoding:
    """Encode `records`' images; decoding runs in `workers` DataLoader processes (on a CPU,
    torch's threads make room for them: `threads_beside_workers`). An unreadable image
    raises DataError naming it, unless `skip_bad` leaves it out."""
    with threads_beside_workers(device, workers):
        return _encode_images(model, records, settings, device, batch_size, workers, skip_bad, precision, on_batch)


def _encode_images(model, records, settings, device, batch_size, workers, skip_bad, precision, on_batch) -> ImageEncoding:
    was_training = model.training
    model.eval()
    loader = DataLoader(
        ImageDataset(records, settings),
        batch_size=batch_size,
        num_workers=workers,
        collate_fn=ImageCollator(settings.max_regions),
        pin_memory=device.type == "cuda",
        persistent_workers=False,
    )
    # Rows are written into one preallocated (N, D) buffer as batches arrive, so peak memory
    # holds the embeddings once (not a list of chunks plus their concatenation).
    embeddings = torch.empty(len(records), model.config.embed_dim)
    kept, failures = [], []
    for pixels, boxes, box_mask, indices, bad in loader:
        if bad and not skip_bad:
            raise DataError(f"{bad[0][1]} (pass --skip-bad to leave unreadable images out)")
        failures.extend(bad)
        if pixels is not None:
            images = normalize_images(pixels.to(device, non_blocking=True), settings.mean, settings.std)
            with autocast_context(device, precision):
                emb = model.encode_image(images, boxes.to(device), box_mask.to(device))
            embeddings[len(kept) : len(kept) + len(indices)] = emb
            kept.extend(indices)
        if on_batch is not None:
            on_batch(len(indices) + len(bad))
    model.train(was_training)
    if len(kept) < len(records):
        embeddings = embeddings[: len(kept)].clone()
    return ImageEncoding(embeddings=embeddings, kept=kept, failures=failures)


@torch.no_grad()
def encode_texts(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    device: torch.device,
    max_length: int,
    batch_size: int = 256,
    precision: str = "fp32",
    token_ids: list[list[int]] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> torch.Tensor:
    """(len(texts), D) float32 embeddings. Batches are formed from texts sorted by length,
    so padding stays small, and returned in input order."""
    was_training = model.training
    model.eval()
    ids = token_ids if token_ids is not None else tokenize_all(tokenizer, texts, max_length)
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = torch.zeros(len(ids), model.config.embed_dim)
    pad_id = tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        input_ids, mask = pad_token_ids([ids[i] for i in chunk], pad_id)
        with autocast_context(device, precision):
            emb = model.encode_text(input_ids.to(device), mask.to(device))
        out[chunk] = emb.float().cpu()
        if on_batch is not None:
            on_batch(len(chunk))
    model.train(was_training)
    return out
