"""Checks and clean-up shared by the readers: captions, boxes, type names.

Every function takes a `source` ("FILE entry 3 (image_id 'a.jpg')" or
"FILE line 7") and raises DataError with a message of the form
``"{source}: {what is wrong}."``.
"""

from __future__ import annotations

import math
import re
import unicodedata

from wenlan_cli.data.paths import quote_value
from wenlan_cli.errors import DataError

__all__ = ["MAX_CAPTION_CHARS", "clean_caption", "clean_text", "json_type_name", "parse_boxes", "parse_captions"]

# Whitespace runs plus invisible characters that only get in the way: C0/C1
# controls, zero-width spaces and joiners, word joiner, BOM.
_RUN = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u200b-\u200d\u2060\ufeff]+")


def json_type_name(value: object) -> str:
    """The JSON name of a parsed value's type, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _is_wide(char: str) -> bool:
    return unicodedata.east_asian_width(char) in ("W", "F")


def clean_caption(text: str) -> str:
    """Strip a caption and tidy its inner whitespace.

    Leading and trailing whitespace goes (including full-width spaces and
    newlines). Inside, a run of whitespace and invisible characters is removed
    when it touches a CJK (wide) character, since Chinese puts no spaces
    between words ("一个人\\n 在路上" -> "一个人在路上", "穿着 T 恤" -> "穿着T恤"),
    and becomes a single space between two narrow characters
    ("hello \\n world" -> "hello world"). A run made only of
    invisible characters (zero-width space, controls) is removed.
    """
    def join(match: re.Match) -> str:
        start, end = match.span()
        if start == 0 or end == len(text):
            return ""
        run = match.group()
        if not any(c.isspace() for c in run):
            return ""
        if _is_wide(text[start - 1]) or _is_wide(text[end]):
            return ""
        return " "

    text = text.strip()
    if _RUN.search(text) is None:
        return text
    return _RUN.sub(join, text)


def parse_captions(value: object, source: str, field: str = "caption") -> list[str]:
    """Validate a list of caption strings and return the cleaned, non-empty ones.

    Raises DataError when `value` is missing, not a list, an empty list, holds
    a non-string, holds text that is not valid Unicode, or when every caption
    is empty after cleaning. Single empty captions among others are dropped.
    """
    if value is None:
        raise DataError(f"{source}: field '{field}' is missing or null.")
    if not isinstance(value, list):
        raise DataError(f"{source}: field '{field}' must be a list of strings, got {json_type_name(value)}.")
    if not value:
        raise DataError(f"{source}: field '{field}' is an empty list.")
    cleaned: list[str] = []
    for j, item in enumerate(value):
        cleaned_item = clean_text(item, source, f"{field}[{j}]")
        if cleaned_item:
            cleaned.append(cleaned_item)
    if not cleaned:
        raise DataError(f"{source}: all {len(value)} captions in '{field}' are empty or whitespace.")
    return cleaned


# One length rule for the captions of every reader (a caption is a sentence; BriVL reads
# its first 80 tokens). The csv module's own field limit, 131,072 characters, lies above it.
MAX_CAPTION_CHARS = 100_000


def clean_text(value: object, source: str, field: str) -> str:
    """Check that one caption is a valid string of at most MAX_CAPTION_CHARS characters and
    return it cleaned (may be "")."""
    if not isinstance(value, str):
        raise DataError(f"{source}: {field} must be a string, got {json_type_name(value)}.")
    if len(value) > MAX_CAPTION_CHARS:
        raise DataError(
            f"{source}: {field} is {len(value):,} characters long; a caption may have at most {MAX_CAPTION_CHARS:,}."
        )
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise DataError(f"{source}: {field} is not valid Unicode (it holds a lone surrogate).") from None
    return clean_caption(value)


def parse_boxes(value: object, source: str, field: str = "bbox") -> list[list[float]] | None:
    """Validate region boxes `[[x1, y1, x2, y2], ...]`; None stays None.

    Each box needs four finite numbers (booleans are not numbers) with
    x2 > x1 and y2 > y1. Coordinates are pixels of the image; they are not
    checked against its size here (the size is unknown until it is decoded).
    An empty list is kept: the image has no region boxes.
    """
    if value is None:
        return None
    if not isinstance(value, list):
        raise DataError(
            f"{source}: field '{field}' must be a list of [x1, y1, x2, y2] boxes, got {json_type_name(value)}."
        )
    boxes: list[list[float]] = []
    for k, box in enumerate(value):
        coords = _fast_box(box)
        if coords is None:
            coords = _checked_box(box, source, f"{field}[{k}]")
        x1, y1, x2, y2 = coords
        if not (x2 > x1 and y2 > y1):
            raise DataError(f"{source}: {field}[{k}] = {coords} is empty or inverted; it needs x2 > x1 and y2 > y1.")
        boxes.append(coords)
    return boxes


_NUMBER_TYPES = (int, float)


def _fast_box(box: object) -> list[float] | None:
    """Four finite floats when `box` is plainly good, else None (then checked slowly)."""
    if type(box) is not list or len(box) != 4:
        return None
    a, b, c, d = box
    if not (type(a) in _NUMBER_TYPES and type(b) in _NUMBER_TYPES
            and type(c) in _NUMBER_TYPES and type(d) in _NUMBER_TYPES):
        return None  # bool is not a number here: type(True) is bool
    try:
        coords = [float(a), float(b), float(c), float(d)]
    except OverflowError:
        return None
    if not all(map(math.isfinite, coords)):
        return None
    return coords


def _checked_box(box: object, source: str, where: str) -> list[float]:
    """Validate one box the slow way, raising a DataError that says what is wrong."""
    if not isinstance(box, list) or len(box) != 4:
        shape = f"{len(box)} values" if isinstance(box, list) else json_type_name(box)
        raise DataError(f"{source}: {where} must be [x1, y1, x2, y2], got {shape}.")
    coords: list[float] = []
    for c in box:
        if isinstance(c, bool) or not isinstance(c, (int, float)):
            shown = "" if c is None else f" {quote_value(c)}"
            raise DataError(f"{source}: {where} holds {json_type_name(c)}{shown}, expected a number.")
        try:
            number = float(c)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise DataError(f"{source}: {where} holds {quote_value(c)}, expected a finite number.")
        coords.append(number)
    return coords
