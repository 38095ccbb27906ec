"""The Python API: `model, preprocess, tokenizer = wenlan.load(CHECKPOINT_DIR)`.

    import wenlan_cli as wenlan
    model, preprocess, tokenizer = wenlan.load("runs/demo")
    images = torch.stack([preprocess(Image.open(p)) for p in paths])
    image_vectors = model.encode_image(images)            # (N, D), L2-normalised
    text_vectors = model.encode_text(["两个红色的圆形"])     # tokenised for you
    scores = text_vectors @ image_vectors.T

Without boxes, the fixed grid of region boxes the model was trained with stands in;
detector boxes can be passed per image in pixels of the original image.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from .data.pipeline import ImageSettings, normalize_images, pad_boxes, region_boxes
from .loading import load_checkpoint


class Preprocess:
    """PIL image (or path) -> normalised float tensor (3, S, S), as the model expects."""

    def __init__(self, settings: ImageSettings) -> None:
        self.settings = settings

    def __call__(self, image: Image.Image | str | Path) -> torch.Tensor:
        from .data.images import load_image

        if not isinstance(image, Image.Image):
            image = load_image(Path(image))
        elif image.mode != "RGB":
            image = image.convert("RGB")
        s = self.settings.image_size
        pixels = np.asarray(image.resize((s, s), Image.BILINEAR), dtype=np.uint8)
        tensor = torch.from_numpy(pixels.copy()).permute(2, 0, 1)
        return normalize_images(tensor[None], self.settings.mean, self.settings.std)[0]


class WenlanModel(nn.Module):
    """The query towers of a checkpoint with friendly `encode_image` / `encode_text`."""

    def __init__(self, brivl: nn.Module, tokenizer, settings: ImageSettings, max_length: int) -> None:
        super().__init__()
        self.brivl = brivl
        self.tokenizer = tokenizer
        self.settings = settings
        self.max_length = max_length

    @property
    def device(self) -> torch.device:
        return next(self.brivl.parameters()).device

    @property
    def embed_dim(self) -> int:
        return self.brivl.config.embed_dim

    @torch.no_grad()
    def encode_image(
        self,
        images: torch.Tensor,
        boxes: Sequence[Sequence[Sequence[float]] | None] | None = None,
        original_sizes: Sequence[tuple[int, int]] | None = None,
    ) -> torch.Tensor:
        """(B, 3, S, S) preprocessed images -> (B, D) unit vectors. `boxes[i]` are detector
        boxes of image i in pixels of its original size `original_sizes[i]` (w, h)."""
        b = images.shape[0]
        s = self.settings.image_size
        box_list = []
        for i in range(b):
            record_boxes = boxes[i] if boxes is not None else None
            size = original_sizes[i] if original_sizes is not None else (s, s)
            box_list.append(region_boxes(record_boxes, size, self.settings))
        box_tensor, mask = pad_boxes(box_list, self.settings.max_regions)
        device = self.device
        return self.brivl.encode_image(images.to(device), box_tensor.to(device), mask.to(device))

    @torch.no_grad()
    def encode_text(self, texts: Sequence[str] | torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Texts (tokenised here) or token ids + mask -> (B, D) unit vectors."""
        if isinstance(texts, torch.Tensor):
            ids = texts
            mask = attention_mask if attention_mask is not None else torch.ones_like(ids)
        else:
            batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt")
            ids, mask = batch["input_ids"], batch["attention_mask"]
        device = self.device
        return self.brivl.encode_text(ids.to(device), mask.to(device))

    def forward(self, images: torch.Tensor, texts: Sequence[str]) -> torch.Tensor:
        """Cosine similarities (B_images, B_texts)."""
        return self.encode_image(images) @ self.encode_text(texts).T


def load(checkpoint: str | Path, device: str | torch.device = "cpu"):
    """(model, preprocess, tokenizer) of a checkpoint or run directory."""
    loaded = load_checkpoint(checkpoint, device=device)
    model = WenlanModel(loaded.model, loaded.tokenizer, loaded.settings, loaded.config.text.max_length).eval()
    return model, Preprocess(loaded.settings), loaded.tokenizer
