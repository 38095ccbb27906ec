"""What one micro-batch of queries costs: one text forward, one image forward and one
exact top-k per index generation, whatever the number of queries in it.

Jobs carry the `Snapshot` their request started with, so a batch that straddles an
index reload ranks each query against the generation its request saw.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..data.images import decode_image_bytes
from ..data.pipeline import normalize_images, pad_boxes, prepare_image
from ..data.records import ImageTextRecord
from ..encode import encode_texts
from ..search.topk import search_vectors
from .live_index import Snapshot

__all__ = ["ImageJob", "Ranked", "TextJob", "UploadedImage", "prepare_upload", "run_batch"]


@dataclass(eq=False)
class TextJob:
    text: str
    k: int
    snapshot: Snapshot


@dataclass(eq=False)
class ImageJob:
    pixels: torch.Tensor  # (3, S, S) uint8, as the data pipeline prepares it
    boxes: np.ndarray  # (R, 4) region boxes of the resized input
    k: int
    snapshot: Snapshot


@dataclass
class Ranked:
    scores: list[float]
    rows: list[int]


@dataclass(frozen=True)
class UploadedImage:
    """An `ImageSource` (see data.records) for image bytes received by the server."""

    data: bytes
    max_pixels: int

    def load(self):
        return decode_image_bytes(self.data, "the uploaded image", max_pixels=self.max_pixels)


def prepare_upload(data: bytes, snapshot: Snapshot, max_pixels: int) -> tuple[torch.Tensor, np.ndarray]:
    """Decode and resize an upload exactly as `wenlan search --image` prepares a file
    (same decoder rules, resize and boxes); raises DataError when it cannot be decoded."""
    record = ImageTextRecord(image_id="upload", image_path=Path("upload"), captions=[],
                             image_source=UploadedImage(data, max_pixels))
    return prepare_image(record, snapshot.loaded.settings)


@torch.no_grad()
def _encode_texts(snapshot: Snapshot, texts: list[str]) -> torch.Tensor:
    loaded = snapshot.loaded
    return encode_texts(loaded.model, loaded.tokenizer, texts, device=snapshot.device,
                        max_length=loaded.config.text.max_length)


@torch.no_grad()
def _encode_images(snapshot: Snapshot, jobs: list[ImageJob]) -> torch.Tensor:
    loaded = snapshot.loaded
    settings = loaded.settings
    boxes, mask = pad_boxes([job.boxes for job in jobs], settings.max_regions)
    images = normalize_images(torch.stack([job.pixels for job in jobs]).to(snapshot.device), settings.mean, settings.std)
    return loaded.model.encode_image(images, boxes.to(snapshot.device), mask.to(snapshot.device)).float().cpu()


def run_batch(jobs: list[TextJob | ImageJob]) -> list[Ranked | Exception]:
    """Encode and rank a batch: texts and images of each snapshot together."""
    results: list[Ranked | Exception | None] = [None] * len(jobs)
    groups: dict[int, list[int]] = {}
    for position, job in enumerate(jobs):
        groups.setdefault(id(job.snapshot), []).append(position)
    for positions in groups.values():
        snapshot = jobs[positions[0]].snapshot
        texts = [p for p in positions if isinstance(jobs[p], TextJob)]
        images = [p for p in positions if isinstance(jobs[p], ImageJob)]
        parts, order = [], []
        if texts:
            parts.append(_encode_texts(snapshot, [jobs[p].text for p in texts]))
            order += texts
        if images:
            parts.append(_encode_images(snapshot, [jobs[p] for p in images]))
            order += images
        queries = torch.nn.functional.normalize(torch.cat(parts).to(torch.float32), dim=1)
        k = max(jobs[p].k for p in order)
        scores, rows = search_vectors(queries.to(snapshot.vectors.device), snapshot.vectors, k)
        for position, row_scores, row_ids in zip(order, scores.cpu().tolist(), rows.cpu().tolist()):
            cut = jobs[position].k
            results[position] = Ranked(scores=[float(s) for s in row_scores[:cut]], rows=[int(i) for i in row_ids[:cut]])
    return results
