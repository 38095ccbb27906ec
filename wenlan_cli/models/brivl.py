"""BriVL: two towers, their momentum copies and two queues of keys (WenLan, section 3)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim.swa_utils import get_ema_multi_avg_fn

from ..config import ModelConfig
from .image_encoder import ImageEncoder
from .loss import brivl_loss, clip_loss, false_negatives
from .queue import FeatureQueue
from .text_encoder import TextEncoder


@dataclass
class StepOutput:
    loss: torch.Tensor
    # Momentum keys of this batch (moco), for the caller to enqueue after its backward.
    image_keys: torch.Tensor | None = None
    text_keys: torch.Tensor | None = None
    # (B, 2) int64 (image id, caption hash) of those keys, when the batch carries them.
    key_ids: torch.Tensor | None = None


class BriVL(nn.Module):
    """The query towers are the model; with the MoCo loss, momentum copies and queues are
    added for training. `encode_image` / `encode_text` return L2-normalised float vectors."""

    def __init__(
        self,
        config: ModelConfig,
        vocab_size: int | None = None,
        pretrained: bool = False,
        for_training: bool = True,
        language_config: dict | None = None,
    ) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.image_encoder = ImageEncoder(config.image, config.embed_dim, pretrained=pretrained)
        self.text_encoder = TextEncoder(
            config.text, config.embed_dim, vocab_size=vocab_size, pretrained=pretrained, language_config=language_config
        )
        self.uses_queues = for_training and config.loss == "moco"
        if self.uses_queues:
            self.image_encoder_m = copy.deepcopy(self.image_encoder).requires_grad_(False)
            self.text_encoder_m = copy.deepcopy(self.text_encoder).requires_grad_(False)
            self.image_queue = FeatureQueue(config.queue_size, config.embed_dim)
            self.text_queue = FeatureQueue(config.queue_size, config.embed_dim)

    # Inference -----------------------------------------------------------------------
    def encode_image(self, images: torch.Tensor, boxes: torch.Tensor, box_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.image_encoder(images, boxes, box_mask).float(), dim=-1)

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.text_encoder(input_ids, attention_mask).float(), dim=-1)

    # Training ------------------------------------------------------------------------
    def query_state_dict(self) -> dict[str, torch.Tensor]:
        """The query towers only: what inference needs and what model.safetensors holds."""
        return {k: v for k, v in self.state_dict().items() if k.startswith(("image_encoder.", "text_encoder."))}

    def momentum_pairs(self) -> list[tuple[nn.Module, nn.Module]]:
        return [(self.image_encoder, self.image_encoder_m), (self.text_encoder, self.text_encoder_m)]

    @torch.no_grad()
    def momentum_update(self) -> None:
        """key = m * key + (1 - m) * query, for every parameter; buffers are copied.
        Through torch's public EMA update (`get_ema_multi_avg_fn`: one multi-tensor lerp
        over each tower's parameters)."""
        update = get_ema_multi_avg_fn(self.config.momentum)
        for online, target in self.momentum_pairs():
            update(list(target.parameters()), [p.detach() for p in online.parameters()], None)
            for q_buf, k_buf in zip(online.buffers(), target.buffers()):
                k_buf.copy_(q_buf)

    def forward(self, batch: dict[str, torch.Tensor], key_shuffle=None, in_batch: bool = False) -> StepOutput:
        """Loss of one batch. With queues, the caller runs `momentum_update()` once per
        optimizer step, before the first micro-batch's forward, and `enqueue()` after each
        micro-batch's backward, before the optimizer step (train/loop.py `train_step`).
        `key_shuffle` (shuffle-BN across processes) permutes the momentum image tower's
        batch and maps its keys back. `in_batch` (queue warm-up) keeps computing the keys
        for the queues but takes the in-batch loss of the query towers, summed over the
        two directions like the queue loss. When the batch carries `image_ids` and
        `caption_hashes` (int64, one per pair) they travel with the keys into the queues,
        and with `mask_false_negatives` a query's own image or identical caption among
        the queued keys is not counted as a negative."""
        images, boxes, box_mask = batch["images"], batch["boxes"], batch["box_mask"]
        input_ids, attention_mask = batch["input_ids"], batch["attention_mask"]
        image_query = F.normalize(self.image_encoder(images, boxes, box_mask), dim=-1)
        text_query = F.normalize(self.text_encoder(input_ids, attention_mask), dim=-1)
        t = self.config.temperature
        if not self.uses_queues:
            return StepOutput(loss=clip_loss(image_query, text_query, t))
        with torch.no_grad():
            if key_shuffle is not None:
                (images_k, boxes_k, mask_k), restore = key_shuffle(images, boxes, box_mask)
                image_key = restore(F.normalize(self.image_encoder_m(images_k, boxes_k, mask_k), dim=-1))
            else:
                image_key = F.normalize(self.image_encoder_m(images, boxes, box_mask), dim=-1)
            text_key = F.normalize(self.text_encoder_m(input_ids, attention_mask), dim=-1)
        key_ids = None
        if "image_ids" in batch and "caption_hashes" in batch:
            key_ids = torch.stack([batch["image_ids"], batch["caption_hashes"]], dim=1).to(torch.long)
        if in_batch:
            return StepOutput(
                loss=2 * clip_loss(image_query, text_query, t), image_keys=image_key, text_keys=text_key, key_ids=key_ids
            )
        excludes = {}
        if key_ids is not None and self.config.mask_false_negatives:
            excludes = dict(
                image_queue_exclude=false_negatives(key_ids, self.image_queue.ids),
                text_queue_exclude=false_negatives(key_ids, self.text_queue.ids),
            )
        loss = brivl_loss(
            image_query,
            text_query,
            image_key,
            text_key,
            self.image_queue.features,
            self.text_queue.features,
            t,
            **excludes,
        )
        return StepOutput(loss=loss, image_keys=image_key, text_keys=text_key, key_ids=key_ids)

    @torch.no_grad()
    def enqueue(self, image_keys: torch.Tensor, text_keys: torch.Tensor, key_ids: torch.Tensor | None = None) -> None:
        """Called after each micro-batch's backward and before the optimizer step, with
        the keys of that micro-batch gathered from every process and, when known, their
        (image id, caption hash) rows. The backward has already used the queue as it was,
        so writing into it here does not disturb autograd; with gradient accumulation
        the next micro-batch of the same step sees these keys as negatives."""
        self.image_queue.enqueue(image_keys, key_ids)
        self.text_queue.enqueue(text_keys, key_ids)
