"""The readers' row checks, vectorised over Arrow columns, for files that pass them.

A reader parses its file once (`_jsonfile.load_json_table`) and first tries these
checks on whole columns; each says no (None or False) as soon as a column is not plainly good
(a wrong type, a null, a name that needs normalising, a caption that is too long, an
all-empty caption list, bad boxes...). The reader then runs its row-by-row checks on
the same table, which find the problem and word the error exactly as before. So a clean
file costs a few passes in C++ and numpy, and the rules stay written once, in
`fields` and `paths`.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..errors import DataError
from .fields import MAX_CAPTION_CHARS, clean_caption
from .paths import InsideResolver

__all__ = ["CleanCaptions", "clean_caption_lists", "is_string", "plain_names", "checked_boxes", "plain_symlinks_inside"]

# Every character that `fields.clean_caption` may remove or replace (whitespace as
# `str.isspace` sees it, C0/C1 controls, zero-width characters, BOM), and a few more;
# a superset is safe: a caption holding one is cleaned by `clean_caption` itself.
# tests/test_data_scale.py checks the superset against every code point.
_MAY_CHANGE = (
    r"[\x{0}-\x{20}\x{7f}-\x{a0}\x{1680}\x{180e}\x{2000}-\x{200f}\x{2028}-\x{202f}"
    r"\x{205f}-\x{206f}\x{3000}\x{feff}]"
)
# A path that `InsideResolver` resolves without normalising (see its `resolve`): no
# separator, NUL or leading dot, and one character that is not whitespace.
_NEEDS_NORMALISING = r"[/\\\x{0}]|^\."
_NOT_BLANK = _MAY_CHANGE.replace("[", "[^", 1)


def is_string(array: pa.Array) -> bool:
    return pa.types.is_string(array.type) or pa.types.is_large_string(array.type)


class CleanCaptions:
    """Captions of every row, cleaned, flat, with per-row offsets."""

    def __init__(self, flat: pa.Array, offsets: np.ndarray) -> None:
        self.flat = flat
        self.offsets = offsets


def clean_caption_lists(column: pa.Array) -> CleanCaptions | None:
    """`fields.parse_captions` over a list<string> column: None unless every row is a
    non-null, non-empty list of non-null strings of at most MAX_CAPTION_CHARS characters
    that keeps at least one caption after cleaning. Empty captions are dropped."""
    if not (pa.types.is_list(column.type) or pa.types.is_large_list(column.type)):
        return None
    if column.null_count or not is_string(column.flatten()):
        return None
    lengths = pc.list_value_length(column).to_numpy(zero_copy_only=False)
    if len(lengths) and lengths.min() == 0:
        return None
    flat = column.flatten().cast(pa.large_string())
    if flat.null_count:
        return None
    chars = pc.utf8_length(flat)
    if len(flat) and pc.max(chars).as_py() > MAX_CAPTION_CHARS:
        return None
    offsets = np.concatenate([[0], np.cumsum(lengths, dtype=np.int64)])
    # Captions that cleaning may change, and empty ones (dropped).
    changing = pc.or_(pc.match_substring_regex(flat, _MAY_CHANGE), pc.equal(chars, 0))
    changing = np.flatnonzero(changing.to_numpy(zero_copy_only=False))
    if len(changing) == 0:
        return CleanCaptions(flat, offsets)
    values = flat.take(pa.array(changing)).to_pylist()
    cleaned = [clean_caption(v) for v in values]
    keep = np.ones(len(flat), dtype=bool)
    keep[changing[np.array([not c for c in cleaned], dtype=bool)]] = False
    texts = pa.array(cleaned, type=pa.large_string())
    # Replace the changed captions, then drop the ones that became empty.
    position = np.full(len(flat), -1, dtype=np.int64)
    position[changing] = np.arange(len(changing))
    merged = pc.if_else(pa.array(position >= 0), texts.take(pa.array(np.maximum(position, 0))), flat)
    kept_per_row = np.add.reduceat(keep.astype(np.int64), offsets[:-1]) if len(lengths) else np.zeros(0, np.int64)
    if len(kept_per_row) and kept_per_row.min() == 0:
        return None  # a row whose captions are all empty: the row check says so
    return CleanCaptions(merged.filter(pa.array(keep)), np.concatenate([[0], np.cumsum(kept_per_row)]))


def plain_names(column: pa.Array) -> bool:
    """Whether every value is a non-null string `InsideResolver` takes as a plain file name."""
    if not is_string(column) or column.null_count:
        return False
    if pc.any(pc.match_substring_regex(column, _NEEDS_NORMALISING)).as_py():
        return False
    return bool(pc.all(pc.match_substring_regex(column, _NOT_BLANK)).as_py() is not False)


def plain_symlinks_inside(resolver: InsideResolver, names: pa.Array) -> bool:
    """`resolver.resolve`'s symlink check for plain names, with one scan of the folder:
    only names that are symlinks there are resolved one by one (a name that is not
    there, or not a link, passes as it does in `resolve`). False when one fails."""
    try:
        with os.scandir(resolver.root_real) as entries:
            links = [entry.name for entry in entries if entry.is_symlink()]
    except OSError:
        return False  # cannot list: the row checks look at each name
    if not links:
        return True
    hits = pc.is_in(names, value_set=pa.array(links, type=names.type))
    try:
        for name in names.filter(hits).to_pylist():
            resolver.resolve(name, "")
    except DataError:
        return False
    return True


def checked_boxes(column: pa.Array | None) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None | bool:
    """`fields.parse_boxes` over a list<list<number>> column: (boxes (M, 4) float64, per-row
    offsets, has-boxes mask), or True when no row has boxes, or None when a row's boxes
    are not plainly good (the row check words the error)."""
    if column is None or pa.types.is_null(column.type) or column.null_count == len(column):
        return True
    if not (pa.types.is_list(column.type) and pa.types.is_list(column.type.value_type)):
        return None
    value_type = column.type.value_type.value_type
    if not (pa.types.is_floating(value_type) or pa.types.is_integer(value_type)):
        return None
    has = column.is_valid().to_numpy(zero_copy_only=False)
    counts = pc.fill_null(pc.list_value_length(column), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    inner = column.flatten()
    if inner.null_count or (len(inner) and not pc.all(pc.equal(pc.list_value_length(inner), 4)).as_py()):
        return None
    values = inner.flatten()
    if values.null_count:
        return None
    boxes = values.to_numpy(zero_copy_only=False).astype(np.float64).reshape(-1, 4)
    if not np.isfinite(boxes).all():
        return None
    if not ((boxes[:, 2] > boxes[:, 0]) & (boxes[:, 3] > boxes[:, 1])).all():
        return None
    return boxes, np.concatenate([[0], np.cumsum(counts)]), has
