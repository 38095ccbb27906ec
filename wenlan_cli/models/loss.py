"""Contrastive losses: BriVL's cross-modal MoCo loss and CLIP's in-batch loss."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def queue_infonce(query: torch.Tensor, positive_key: torch.Tensor, queue: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE of each query against its own key (class 0) and every queued key."""
    positive = (query * positive_key).sum(dim=-1, keepdim=True)
    negative = query @ queue.t()
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
) -> torch.Tensor:
    """BriVL: image queries against [their text key, the text queue] plus text queries
    against [their image key, the image queue] — a sum, as in the paper."""
    return queue_infonce(image_query, text_key, text_queue, temperature) + queue_infonce(
        text_query, image_key, image_queue, temperature
    )


def clip_loss(image: torch.Tensor, text: torch.Tensor, temperature: float) -> torch.Tensor:
    """Symmetric in-batch InfoNCE (CLIP): the mean of the two directions."""
    logits = image @ text.t() / temperature
    target = torch.arange(image.shape[0], device=image.device)
    return (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target)) / 2
