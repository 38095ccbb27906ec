"""Retrieval evaluation of a model on a list of records (every caption is a query)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..data.pipeline import ImageSettings
from ..data.records import ImageTextRecord
from ..encode import encode_images, encode_texts
from .retrieval import retrieval_metrics


def caption_table(records: Sequence[ImageTextRecord]) -> tuple[list[str], torch.Tensor]:
    """All captions in record order and the index of each caption's image."""
    texts, owners = [], []
    for index, record in enumerate(records):
        texts.extend(record.captions)
        owners.extend([index] * len(record.captions))
    return texts, torch.tensor(owners, dtype=torch.long)


def query_table(records: Sequence[ImageTextRecord]) -> tuple[list[str], torch.Tensor | list[list[int]]]:
    """The text queries of `records` and the gold image index(es) of each.

    Without caption ids this is `caption_table`: every caption is a query with one gold
    image, as a (M,) tensor. Records whose ``meta["text_ids"]`` name their captions
    (Chinese-CLIP's benchmarks) share a text between several images: each id becomes
    one query, in order of first appearance, and the gold comes back as a list of
    index lists (`retrieval_metrics`' multi-gold form) when any text has more than one.
    """
    texts: list[str] = []
    gold: list[list[int]] = []
    position: dict[object, int] = {}
    for index, record in enumerate(records):
        ids = record.meta.get("text_ids") if record.meta else None
        for j, caption in enumerate(record.captions):
            key = ids[j] if ids is not None and j < len(ids) else None
            if key is not None:
                if key in position:
                    gold[position[key]].append(index)
                    continue
                position[key] = len(texts)
            texts.append(caption)
            gold.append([index])
    if any(len(g) > 1 for g in gold):
        return texts, gold
    return texts, torch.tensor([g[0] for g in gold], dtype=torch.long)


def evaluate_retrieval(
    model,
    tokenizer,
    records: Sequence[ImageTextRecord],
    settings: ImageSettings,
    *,
    device: torch.device,
    max_length: int,
    batch_size: int = 128,
    workers: int = 0,
    precision: str = "fp32",
    chunk_size: int = 1024,
    skip_bad: bool = False,
) -> dict:
    """Text->image and image->text Recall@1/5/10 (and their mean) over `records`; a text
    shared by several records (``meta["text_ids"]``) is one query with several golds.

    An unreadable image raises DataError, unless `skip_bad` leaves it out together with
    its captions (the queries whose gold it is); the metrics then hold `skipped_images`
    and `skipped` (path and reason of each)."""
    images = encode_images(
        model, records, settings, device=device, batch_size=batch_size, workers=workers, precision=precision, skip_bad=skip_bad
    )
    skipped = [{"path": str(records[i].image_path), "error": message} for i, message in images.failures]
    if skipped:
        records = [records[i] for i in images.kept]
        if not records:
            from ..errors import DataError

            raise DataError(f"none of the {len(skipped)} images could be read; the first: {skipped[0]['error']}")
    texts, owners = query_table(records)
    text_emb = encode_texts(model, tokenizer, texts, device=device, max_length=max_length, batch_size=2 * batch_size, precision=precision)
    metrics = retrieval_metrics(images.embeddings, text_emb, owners, chunk_size=chunk_size)
    if skip_bad:
        metrics.update(skipped_images=len(skipped), skipped=skipped)
    return metrics
