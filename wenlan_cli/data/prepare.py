"""Image preprocessing without torch: decode, resize to the square input, place the boxes.

The PyTorch pipeline (`data.pipeline`) and the onnxruntime path (`runtime`) share these
functions, so both feed their models the same pixels and boxes, and the ONNX path can
run without importing torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from .images import load_image, load_image_resized
from .records import ImageTextRecord


@dataclass(frozen=True)
class ImageSettings:
    """What the image tower needs from the data: input size and region layout."""

    image_size: int
    max_regions: int
    grid_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def from_config(cls, image_config) -> "ImageSettings":
        return cls(
            image_size=image_config.image_size,
            max_regions=image_config.max_regions,
            grid_size=image_config.grid_size,
            mean=tuple(image_config.mean),
            std=tuple(image_config.std),
        )


def region_boxes(record_boxes, original_size: tuple[int, int], settings: ImageSettings) -> np.ndarray:
    """The whole-image box, then the record's boxes (or, when the data has none — None, not
    an empty list — a fixed grid), in pixels of the resized square input; at most
    `max_regions` rows."""
    s = settings.image_size
    boxes = [[0.0, 0.0, float(s), float(s)]]
    if record_boxes is not None:
        w, h = original_size
        sx, sy = s / w, s / h
        for x1, y1, x2, y2 in record_boxes[: settings.max_regions - 1]:
            boxes.append([
                min(max(x1 * sx, 0.0), s), min(max(y1 * sy, 0.0), s),
                min(max(x2 * sx, 0.0), s), min(max(y2 * sy, 0.0), s),
            ])
    elif settings.max_regions > 1 and settings.grid_size > 0:
        step = s / settings.grid_size
        grid = [
            [c * step, r * step, (c + 1) * step, (r + 1) * step]
            for r in range(settings.grid_size)
            for c in range(settings.grid_size)
        ]
        boxes += grid[: settings.max_regions - 1]
    return np.asarray(boxes, dtype=np.float32)


def load_record_image(record: ImageTextRecord) -> Image.Image:
    """A record's image as upright RGB: from its `image_source` when it has one (an image
    stored inside a data file), else from `image_path`. Raises DataError naming it."""
    source = getattr(record, "image_source", None)
    return source.load() if source is not None else load_image(record.image_path)


def prepare_image_array(record: ImageTextRecord, settings: ImageSettings) -> tuple[np.ndarray, np.ndarray]:
    """Decode, resize to the square input size, and place the boxes: (S, S, 3) uint8 RGB
    and (R, 4) float32 boxes. Image files go through `load_image_resized` (no full-size
    copy; large JPEGs decoded at a reduced scale)."""
    s = settings.image_size
    source = getattr(record, "image_source", None)
    if source is None:
        image, size = load_image_resized(record.image_path, s)
    elif hasattr(source, "load_resized"):  # a shard's sample: the pixels its image file gives
        image, size = source.load_resized(s)
    else:
        image = load_record_image(record)
        size = image.size
        if size != (s, s):
            image = image.resize((s, s), Image.BILINEAR, reducing_gap=None)
    boxes = region_boxes(record.boxes, size, settings)
    return np.array(image, dtype=np.uint8), boxes


def pad_boxes_array(box_list, max_regions: int) -> tuple[np.ndarray, np.ndarray]:
    """(B, R, 4) float32 boxes and (B, R) bool mask; padding repeats the whole-image box
    (the layout `pipeline.pad_boxes` gives the PyTorch model)."""
    b = len(box_list)
    boxes = np.zeros((b, max_regions, 4), dtype=np.float32)
    mask = np.zeros((b, max_regions), dtype=bool)
    for i, arr in enumerate(box_list):
        n = len(arr)
        boxes[i, :n] = arr
        boxes[i, n:] = boxes[i, 0]
        mask[i, :n] = True
    return boxes, mask


def normalize_array(pixels: np.ndarray, mean, std) -> np.ndarray:
    """uint8 (B, S, S, 3) -> float32 (B, 3, S, S), (x - 255 mean) / (255 std) in float32:
    the arithmetic of `pipeline.normalize_images`, so both paths get the same values."""
    mean_a = np.asarray(mean, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    std_a = np.asarray(std, dtype=np.float32).reshape(1, 3, 1, 1) * np.float32(255)
    out = pixels.transpose(0, 3, 1, 2).astype(np.float32)
    out -= mean_a
    out /= std_a
    return out
