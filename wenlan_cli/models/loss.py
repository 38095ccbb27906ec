"""Contrastive losses: BriVL's cross-modal MoCo loss and CLIP's in-batch loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def false_negatives(query_ids: torch.Tensor, queue_ids: torch.Tensor) -> torch.Tensor:
    """(B, Q) bool: queued key j is query i's own image or the same caption.

    Ids are (image id, caption hash) rows of int64, `query_ids` (B, 2) and `queue_ids`
    (Q, 2); a negative id means "no id" and matches nothing. With several captions per
    image the same image comes back into the queue, paired with another caption; counting
    it as a negative pushes a query away from its own match."""
    known = queue_ids >= 0
    same = (query_ids[:, None, :] == queue_ids[None, :, :]) & known[None, :, :]
    return same.any(dim=-1)


def queue_infonce(
    query: torch.Tensor,
    positive_key: torch.Tensor,
    queue: torch.Tensor,
    temperature: float,
    exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """InfoNCE of each query against its own key (class 0) and every queued key.
    `exclude` (B, Q) bool drops queued keys from a query's negatives (logit -inf); the
    positive is always kept, so every row keeps a finite logit."""
    positive = (query * positive_key).sum(dim=-1, keepdim=True)
    negative = query @ queue.t()
    if exclude is not None:
        negative = negative.masked_fill(exclude, float("-inf"))
    logits = torch.cat([positive, negative], dim=1) / temperature
    target = torch.zeros(query.shape[0], dtype=torch.long, device=query.device)
    return F.cross_entropy(logits, target)


def brivl_loss(
    image_query: torch.Tensor,
    text_query: torch.Tensor,
    image_key: torch.Tensor,
    text_key: torch.Tensor,
    image_queue: torch.Tensor,
    text_queue: torch.Tensor,
    temperature: float,
    image_queue_exclude: torch.Tensor | None = None,
    text_queue_exclude: torch.Tensor | None = None,
) -> torch.Tensor:
    """BriVL: image queries against [their text key, the text queue] plus text queries
    against [their image key, the image queue] — a sum, as in the paper. The `*_exclude`
    masks (see `false_negatives`) remove false negatives from each queue."""
    return queue_infonce(image_query, text_key, text_queue, temperature, text_queue_exclude) + queue_infonce(
        text_query, image_key, image_queue, temperature, image_queue_exclude
    )


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE (CLIP): the mean of the two directions."""
    logits = image @ text.t() / temperature
    target = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
