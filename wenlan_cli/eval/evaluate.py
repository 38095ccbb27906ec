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
) -> dict:
    """Text->image and image->text Recall@1/5/10 (and their mean) over `records`."""
    images = encode_images(model, records, settings, device=device, batch_size=batch_size, workers=workers, precision=precision)
    texts, owners = caption_table(records)
    text_emb = encode_texts(model, tokenizer, texts, device=device, max_length=max_length, batch_size=2 * batch_size, precision=precision)
    return retrieval_metrics(images.embeddings, text_emb, owners, chunk_size=chunk_size)
