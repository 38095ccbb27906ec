"""The one record type every dataset reader produces."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # pragma: no cover
    from PIL import Image


class ImageSource(Protocol):
    """Where an image comes from when it is not a file of its own (e.g. one line of a
    base64 TSV). Must be picklable (it travels to DataLoader workers) and cheap to
    hold: `load` reads and decodes on demand, by the rules of `images.load_image`."""

    def load(self) -> "Image.Image":
        """The decoded RGB image; raises DataError naming where it lives."""
        ...


@dataclass
class ImageTextRecord:
    """An image with its captions and, when the data has them, region boxes.

    `image_path` is absolute and checked to lie inside the dataset directory.
    `boxes` are `[x1, y1, x2, y2]` in pixels of the original image, or None.
    `image_source`, when set, is where the pixels are read from instead of
    `image_path` (which then names the data file that holds the image); use
    `pipeline.load_record_image` to decode a record's image either way.
    `meta["text_ids"]`, when present, is parallel to `captions`: a caption id
    shared by several records is ONE text with several gold images (retrieval
    evaluation counts it once; see `eval.evaluate.query_table`).
    """

    image_id: str
    image_path: Path
    captions: list[str]
    boxes: list[list[float]] | None = None
    meta: dict = field(default_factory=dict)
    image_source: ImageSource | None = None
