"""A split's records held as columns: one Arrow string buffer per field, not an object per image.

AIC-ICC's training split is 210,000 images x 5 captions; the paper's is 30 million pairs.
As `ImageTextRecord` objects (a dataclass, a `Path`, a list, five strings, a dict each)
such a split costs ~1.5 KB an image in Python objects and makes every DataLoader worker
touch (and so copy) them all. `RecordTable` keeps the same data as Arrow arrays (ids,
paths relative to one root, all captions flat with per-image offsets, boxes flat as
float64, and what a reader keeps in `meta`: per image, e.g. a url or a line number, and
per caption, e.g. BriVL's sentence kinds or Chinese-CLIP's text ids) and builds a record
only when one is asked for, so it is a drop-in
`Sequence[ImageTextRecord]`: `len`, indexing, iteration and slicing (a list) behave as
on the list the readers returned before. `caption_counts()` and `captions()` give the
training set-up what it needs without building a record per image.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pyarrow as pa

from .records import ImageTextRecord

__all__ = ["RecordTable", "all_captions", "caption_counts", "joined_captions"]


class RecordTable(Sequence):
    """Records in columns (see the module doc). Build with `from_columns` or `from_records`."""

    def __init__(self, root: str, ids: pa.Array, paths: pa.Array | None, captions: pa.Array,
                 caption_offsets: np.ndarray, boxes: np.ndarray, box_offsets: np.ndarray | None,
                 has_boxes: np.ndarray | None, urls: pa.Array | None,
                 record_meta: dict[str, pa.Array] | None = None, caption_meta: dict[str, pa.Array] | None = None,
                 sources=None) -> None:
        self.root = root
        self._ids = ids
        self._paths = paths  # None: the path under `root` is the id itself
        self._captions = captions
        self._caption_offsets = caption_offsets
        self._boxes = boxes
        self._box_offsets = box_offsets  # None: no record has boxes
        self._has_boxes = has_boxes
        self._urls = urls  # None: no record has a url
        self._record_meta = record_meta or {}  # meta[name] of image i is column[i] (left out where null)
        self._caption_meta = caption_meta or {}  # meta[name] of image i: column[captions of i], a list
        self._sources = sources  # None, or sources(i, image_id) -> the record's image_source

    # Construction ---------------------------------------------------------------------
    @classmethod
    def from_columns(cls, root: str, ids: pa.Array, captions: pa.Array, caption_offsets: np.ndarray, *,
                     paths: pa.Array | None = None, urls: pa.Array | None = None,
                     boxes: np.ndarray | None = None, box_offsets: np.ndarray | None = None,
                     has_boxes: np.ndarray | None = None, record_meta: dict[str, pa.Array] | None = None,
                     caption_meta: dict[str, pa.Array] | None = None, sources=None) -> "RecordTable":
        """A table over already-checked columns: `captions` flat (cleaned, none empty) with
        image i's captions at `caption_offsets[i]:caption_offsets[i + 1]`; `paths` relative
        to `root` (None when they equal the ids); `boxes` (M, 4) float64 with image i's at
        `box_offsets[i]:box_offsets[i + 1]` and `has_boxes[i]` false where it had none
        (None, as opposed to an empty list); `record_meta` / `caption_meta` columns per image /
        parallel to `captions` that become `meta` entries; `sources(i, image_id)` (picklable)
        the image source of image i, for images that are not files of their own."""
        return cls(root, ids, paths, captions, np.asarray(caption_offsets, dtype=np.int64),
                   np.zeros((0, 4)) if boxes is None else boxes, box_offsets, has_boxes, urls,
                   record_meta, caption_meta, sources)

    @classmethod
    def from_records(cls, records: Sequence[ImageTextRecord], root: str,
                     caption_meta: Sequence[str] = ()) -> "RecordTable":
        """A table holding `records`, whose paths lie under `root`, whose meta holds at most
        a url and the `caption_meta` lists (one item per caption, e.g. BriVL's "kinds"), and
        which have no image_source."""
        prefix = os.path.join(root, "")
        relative = [str(r.image_path)[len(prefix):] for r in records]
        ids = [r.image_id for r in records]
        counts = np.fromiter((len(r.captions) for r in records), dtype=np.int64, count=len(records))
        offsets = np.concatenate([[0], np.cumsum(counts)])
        captions = pa.array([c for r in records for c in r.captions], type=pa.large_string())
        has = np.fromiter((r.boxes is not None for r in records), dtype=bool, count=len(records))
        box_counts = np.fromiter((len(r.boxes or ()) for r in records), dtype=np.int64, count=len(records))
        boxes = np.array([b for r in records for b in (r.boxes or ())], dtype=np.float64).reshape(-1, 4)
        urls = [r.meta.get("url") for r in records]
        return cls.from_columns(
            root, pa.array(ids, type=pa.large_string()), captions, offsets,
            paths=None if relative == ids else pa.array(relative, type=pa.large_string()),
            urls=pa.array(urls, type=pa.large_string()) if any(u is not None for u in urls) else None,
            boxes=boxes, box_offsets=np.concatenate([[0], np.cumsum(box_counts)]) if has.any() else None,
            has_boxes=has if has.any() else None,
            caption_meta={name: pa.array([v for r in records for v in r.meta[name]]) for name in caption_meta},
        )

    # Sequence ---------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self._ids)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self.record(i) for i in range(*index.indices(len(self)))]
        n = len(self)
        i = int(index)
        if i < 0:
            i += n
        if not 0 <= i < n:
            raise IndexError(f"record index {index} out of range for {n} records")
        return self.record(i)

    def __iter__(self) -> Iterator[ImageTextRecord]:
        for i in range(len(self)):
            yield self.record(i)

    def record(self, i: int) -> ImageTextRecord:
        """Record i, built from the columns."""
        image_id = self._ids[i].as_py()
        relative = image_id if self._paths is None else self._paths[i].as_py()
        start, end = int(self._caption_offsets[i]), int(self._caption_offsets[i + 1])
        captions = self._captions.slice(start, end - start).to_pylist()
        boxes = None
        if self._box_offsets is not None and self._has_boxes[i]:
            b0, b1 = int(self._box_offsets[i]), int(self._box_offsets[i + 1])
            boxes = self._boxes[b0:b1].tolist()
        return ImageTextRecord(
            image_id=image_id, image_path=Path(os.path.join(self.root, relative)), captions=captions,
            boxes=boxes, meta=self._meta(i, start, end),
            image_source=self._sources(i, image_id) if self._sources is not None else None,
        )

    def _meta(self, i: int, start: int, end: int) -> dict:
        """Record i's meta: its url and per-image columns (where not null), its caption lists."""
        url = self._urls[i].as_py() if self._urls is not None else None
        meta = {"url": url} if url is not None else {}
        for name, column in self._record_meta.items():
            value = column[i].as_py()
            if value is not None:
                meta[name] = value
        for name, column in self._caption_meta.items():
            meta[name] = column.slice(start, end - start).to_pylist()
        return meta

    # Columns ----------------------------------------------------------------------------
    def caption_counts(self) -> np.ndarray:
        """Captions per image, (N,) int64."""
        return np.diff(self._caption_offsets)

    def captions(self) -> list[str]:
        """Every caption, image by image (one list, for the vocabulary)."""
        return self._captions.to_pylist()

    def joined_captions(self, separator: str = "\n") -> str:
        """Every caption joined by `separator`, joined by Arrow (no Python string per caption)."""
        import pyarrow.compute as pc

        if len(self._captions) == 0:
            return ""
        whole = pa.LargeListArray.from_arrays(pa.array([0, len(self._captions)], type=pa.int64()), self._captions)
        return pc.binary_join(whole, pa.scalar(separator, pa.large_string()))[0].as_py()

    def image_captions(self, i: int) -> list[str]:
        """Image i's captions, without building its record."""
        start, end = int(self._caption_offsets[i]), int(self._caption_offsets[i + 1])
        return self._captions.slice(start, end - start).to_pylist()

    def __repr__(self) -> str:
        return f"RecordTable({len(self):,} images, {len(self._captions):,} captions, root={self.root!r})"


def caption_counts(records: Sequence[ImageTextRecord]) -> list[int]:
    """Captions per record; from the columns when `records` is a `RecordTable`."""
    if isinstance(records, RecordTable):
        return records.caption_counts().tolist()
    return [len(r.captions) for r in records]


def joined_captions(records: Sequence[ImageTextRecord], separator: str = "\n") -> str:
    """Every caption of `records` joined by `separator` (for the character vocabulary)."""
    if isinstance(records, RecordTable):
        return records.joined_captions(separator)
    return separator.join(c for r in records for c in r.captions)


def all_captions(records: Sequence[ImageTextRecord]) -> list[str]:
    """Every caption of `records` in order; from the columns when `records` is a `RecordTable`."""
    if isinstance(records, RecordTable):
        return records.captions()
    return [c for r in records for c in r.captions]
