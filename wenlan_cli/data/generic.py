"""Generic image-text tables: JSON Lines and CSV with configurable columns.

Layout: ``DATA_DIR/{split}.jsonl`` or ``DATA_DIR/{split}.csv``; image paths
are relative to DATA_DIR.

Columns: the image path is in `image_column` (default ``image``); the text
is in `text_column`, by default ``text`` or, when no row has ``text``,
``caption``. In JSON Lines a text cell is a string or a list of strings and
an optional ``bbox`` field carries boxes; in CSV every cell is read as the
string written (no number or NA conversion).

Several rows naming the same image (after path normalisation, so
``a.jpg`` and ``./a.jpg`` are one image) become one record whose captions
are in first-seen order; records are in order of each image's first row.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from wenlan_cli.data._jsonfile import load_json_rows
from wenlan_cli.data.fields import clean_text, json_type_name, parse_boxes, parse_captions
from wenlan_cli.data.files import read_csv_rows
from wenlan_cli.data.paths import InsideResolver, check_image_files, quote_value, split_file
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.data.table import RecordTable
from wenlan_cli.errors import DataError, UsageError

__all__ = ["DEFAULT_IMAGE_COLUMN", "DEFAULT_TEXT_COLUMNS", "read_csv", "read_jsonl"]

DEFAULT_IMAGE_COLUMN = "image"
DEFAULT_TEXT_COLUMNS = ("text", "caption")
_BOX_FIELD = "bbox"


def _check_columns(image_column: str, text_column: str | None) -> None:
    for name, value in (("image_column", image_column), ("text_column", text_column)):
        if value is not None and (not isinstance(value, str) or not value):
            raise UsageError(f"the option {name} must be a non-empty column name, got {quote_value(value)}.")
    if image_column == text_column:
        raise UsageError(f"the image and text columns must differ (both are {image_column!r}).")


def _image_path(resolver: InsideResolver, where: str, image: object, image_column: str) -> Path:
    """Check one row's image cell and resolve it inside the data folder."""
    if image is None:
        raise DataError(f"{where}: the image column {image_column!r} is missing or null.")
    if not isinstance(image, str):
        raise DataError(f"{where}: the image column {image_column!r} must hold a string, got {json_type_name(image)}.")
    if not image.strip():
        raise DataError(f"{where}: the image column {image_column!r} is empty.")
    return resolver.resolve(image, f"{where} (image {quote_value(image)})")


class _Grouper:
    """Merges rows that name the same image into one record, in first-seen order."""

    def __init__(self) -> None:
        self.records: list[ImageTextRecord] = []
        self.first_row: list[int] = []
        self._index: dict[Path, int] = {}

    def add(self, row_index: int, image: str, path: Path, captions: list[str],
            boxes: list[list[float]] | None) -> int | None:
        """Add a row; return the first row of its image when its boxes disagree, else None."""
        k = self._index.get(path)
        if k is None:
            self._index[path] = len(self.records)
            self.first_row.append(row_index)
            self.records.append(ImageTextRecord(image_id=image, image_path=path, captions=list(captions), boxes=boxes))
            return None
        record = self.records[k]
        record.captions.extend(captions)
        if boxes is not None:
            if record.boxes is None:
                record.boxes = boxes
            elif record.boxes != boxes:
                return self.first_row[k]
        return None


# --------------------------------------------------------------------------- jsonl

def _jsonl_captions(where: str, value: object, column: str) -> list[str]:
    if isinstance(value, list):
        return parse_captions(value, where, column)
    if value is None:
        raise DataError(f"{where}: the text column {column!r} is missing or null.")
    if not isinstance(value, str):
        raise DataError(
            f"{where}: the text column {column!r} must hold a string or a list of strings, got {json_type_name(value)}."
        )
    caption = clean_text(value, where, f"the text column {column!r}")
    if not caption:
        raise DataError(f"{where}: the text column {column!r} is empty or whitespace.")
    return [caption]


def _auto_text_column(row: Mapping) -> str:
    for name in DEFAULT_TEXT_COLUMNS:
        if row.get(name) is not None:
            return name
    return DEFAULT_TEXT_COLUMNS[0]


def read_jsonl(
    data_dir: Path,
    split: str,
    *,
    image_column: str = DEFAULT_IMAGE_COLUMN,
    text_column: str | None = None,
    check_images: bool = False,
) -> RecordTable:
    """Read ``DATA_DIR/{split}.jsonl`` (see the module doc for the columns); the records
    are held as columns (`table.RecordTable`, a sequence of ImageTextRecords).

    Errors are DataErrors naming the file and the 1-based line.
    """
    _check_columns(image_column, text_column)
    root = Path(data_dir)
    path = split_file(root, split, ".jsonl", "jsonl")
    fields = [image_column, _BOX_FIELD]
    fields += [text_column] if text_column else [c for c in DEFAULT_TEXT_COLUMNS if c != image_column]
    fields = list(dict.fromkeys(fields))

    resolver = InsideResolver(root)

    def check(where: str, row: Mapping) -> None:  # used to word errors when datasets fails
        _jsonl_row(resolver, where, row, image_column, text_column or _auto_text_column(row))

    rows, names = load_json_rows(path, "lines", fields, check)
    column = text_column
    if column is None:
        column = next(
            (c for c in DEFAULT_TEXT_COLUMNS if c != image_column and any(r.get(c) is not None for r in rows)),
            None,
        )
        if column is None:
            raise DataError(
                f"{path}: no line has a text field; expected {' or '.join(repr(c) for c in DEFAULT_TEXT_COLUMNS)} "
                f"(or name the text column)."
            )
    grouper = _Grouper()
    for i, row in enumerate(rows):
        try:
            image, image_path, captions, boxes = _jsonl_row(resolver, "", row, image_column, column)
        except DataError:
            _jsonl_row(resolver, names(i), row, image_column, column)  # the same error, now located
            raise
        earlier = grouper.add(i, image, image_path, captions, boxes)
        if earlier is not None:
            raise DataError(
                f"{names(i)} (image {quote_value(image)}): its '{_BOX_FIELD}' differs from the boxes given "
                f"for the same image on {names.short(earlier)}."
            )
    if check_images:
        check_image_files(grouper.records, lambda k: names(grouper.first_row[k]))
    return RecordTable.from_records(grouper.records, resolver.root_real)


def _jsonl_row(resolver: InsideResolver, where: str, row: Mapping, image_column: str,
               text_column: str) -> tuple[str, Path, list[str], list[list[float]] | None]:
    """(image, path, captions, boxes) of one line, or a DataError located at `where`."""
    image = row.get(image_column)
    label = f"{where} (image {quote_value(image)})" if isinstance(image, str) else where
    captions = _jsonl_captions(label, row.get(text_column), text_column)
    boxes = parse_boxes(row.get(_BOX_FIELD), label, _BOX_FIELD)
    path = _image_path(resolver, where, image, image_column)
    return image, path, captions, boxes  # type: ignore[return-value]


# --------------------------------------------------------------------------- csv

def _csv_text_column(path: Path, header: list[str], image_column: str, text_column: str | None) -> str:
    """The text column, once the header is checked to name it and the image column once each."""
    column = text_column or next((c for c in DEFAULT_TEXT_COLUMNS if c in header and c != image_column), None)
    for role, name in (("image", image_column), ("text", column)):
        if name is None:
            raise DataError(
                f"{path}: the header has no text column {' or '.join(repr(c) for c in DEFAULT_TEXT_COLUMNS)} "
                f"(columns: {', '.join(map(repr, header))})."
            )
        if name not in header:
            raise DataError(
                f"{path}: the header has no {role} column {name!r} (columns: {', '.join(map(repr, header))})."
            )
        if header.count(name) > 1:
            raise DataError(f"{path}: the header names the column {name!r} {header.count(name)} times.")
    assert column is not None
    return column


def read_csv(
    data_dir: Path,
    split: str,
    *,
    image_column: str = DEFAULT_IMAGE_COLUMN,
    text_column: str | None = None,
    check_images: bool = False,
) -> RecordTable:
    """Read ``DATA_DIR/{split}.csv`` (UTF-8, comma separated, with a header row); the
    records are held as columns (`table.RecordTable`).

    Errors are DataErrors naming the file and the line where the record starts.
    """
    _check_columns(image_column, text_column)
    root = Path(data_dir)
    path = split_file(root, split, ".csv", "csv")
    records = read_csv_rows(path)  # the file's one parse
    if not records:
        raise DataError(f"{path} is empty; expected a header row naming the columns.")
    header_line, header = records[0]
    body = records[1:]
    column = _csv_text_column(path, header, image_column, text_column)
    width = len(header)
    for line, cells in body:
        if len(cells) != width:
            fields = f"{len(cells)} field" + ("" if len(cells) == 1 else "s")
            raise DataError(f"{path} line {line}: the record has {fields} but the header has {width}.")
    if not body:
        raise DataError(f"{path}: the file has a header but no rows.")

    at_image, at_text = header.index(image_column), header.index(column)
    resolver = InsideResolver(root)
    grouper = _Grouper()
    for i, (line, cells) in enumerate(body):
        label, image, text = f"{path} line {line}", cells[at_image], cells[at_text]
        image_path = _image_path(resolver, label, image, image_column)
        caption = clean_text(text, label, f"the text column {column!r}")
        if not caption:
            raise DataError(f"{label} (image {quote_value(image)}): the text column {column!r} is empty or whitespace.")
        grouper.add(i, image, image_path, [caption], None)
    if not grouper.records:
        raise DataError(f"{path}: the file has a header but no rows.")
    if check_images:
        check_image_files(grouper.records, lambda k: f"{path} line {body[grouper.first_row[k]][0]}")
    return RecordTable.from_records(grouper.records, resolver.root_real)
