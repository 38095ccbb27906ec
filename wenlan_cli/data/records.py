"""The one record type every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class ImageTextRecord:
    """An image with its captions and, when the data has them, region boxes.

    `image_path` is absolute and checked to lie inside the dataset directory.
    `boxes` are `[x1, y1, x2, y2]` in pixels of the original image, or None.
    """

    image_id: str
    image_path: Path
    captions: list[str]
    boxes: list[list[float]] | None = None
    meta: dict = field(default_factory=dict)
