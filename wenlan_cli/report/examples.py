"""Retrieval examples for the report: a few captions of the evaluation split and the
images the run's checkpoint ranks first for them, as thumbnails."""

from __future__ import annotations

import base64
import io
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ..data.pipeline import load_record_image
from ..data.records import ImageTextRecord

__all__ = ["Example", "pick_queries", "retrieval_examples", "thumbnail_uri"]


@dataclass
class Example:
    """One text query: its gold image indices, the top-k (record index, score) and the
    1-based rank of its best-placed gold image among all `num_images`."""

    text: str
    gold: list[int]
    hits: list[tuple[int, float]]
    gold_rank: int
    num_images: int


def pick_queries(num_texts: int, n: int) -> list[int]:
    """`n` query indices spread evenly over the texts (all of them when there are fewer)."""
    if n <= 0 or num_texts <= 0:
        return []
    if n >= num_texts:
        return list(range(num_texts))
    return [i * num_texts // n for i in range(n)]


@torch.no_grad()
def retrieval_examples(
    loaded,
    records: Sequence[ImageTextRecord],
    n: int,
    top_k: int,
    *,
    device: torch.device,
    batch_size: int = 64,
    workers: int = 0,
) -> list[Example]:
    """Rank every image of `records` for `n` of their texts with `loaded` (a
    `loading.LoadedModel`). Ties are ordered by image index, as in the recall metric."""
    from ..encode import encode_images, encode_texts
    from ..eval.evaluate import query_table

    texts, gold = query_table(records)
    chosen = pick_queries(len(texts), n)
    if not chosen:
        return []
    gold_sets = [list(g) for g in gold] if isinstance(gold, list) else [[int(i)] for i in gold.tolist()]
    images = encode_images(loaded.model, records, loaded.settings, device=device, batch_size=batch_size, workers=workers).embeddings
    queries = encode_texts(
        loaded.model, loaded.tokenizer, [texts[i] for i in chosen], device=device, max_length=loaded.config.text.max_length
    )
    scores = queries @ images.T
    order = torch.sort(scores, dim=1, descending=True, stable=True).indices
    k = min(top_k, images.shape[0])
    examples = []
    for row, t in enumerate(chosen):
        ranking = order[row].tolist()
        position = {index: p for p, index in enumerate(ranking)}
        examples.append(
            Example(
                text=texts[t],
                gold=gold_sets[t],
                hits=[(i, float(scores[row, i])) for i in ranking[:k]],
                gold_rank=min(position[g] for g in gold_sets[t]) + 1,
                num_images=images.shape[0],
            )
        )
    return examples


def thumbnail_uri(record: ImageTextRecord, size: int = 128) -> str:
    """A ``data:image/jpeg;base64,...`` thumbnail (longest side `size`) of a record's image."""
    image = load_record_image(record)
    image.thumbnail((size, size))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=85)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
