"""BriVL JSON Lines: the annotation format of the released BriVL code.

``DATA_DIR/{split}.jsonl`` holds one object per line::

    {"image_id": "imgs/0001.jpg", "sentences": [["caption", "一只猫"], ...],
     "bbox": [[x1, y1, x2, y2], ...]}

`image_id` is the image path relative to DATA_DIR (and the record's id);
`sentences` are ``[kind, text]`` pairs whose texts become the captions (the
kinds, in order, go to ``record.meta["kinds"]``); `bbox` is optional.
An image appears on one line only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from wenlan_cli.data._jsonfile import load_json_rows, parse_unique_rows
from wenlan_cli.data.fields import clean_text, json_type_name, parse_boxes
from wenlan_cli.data.paths import InsideResolver, check_image_files, quote_value, split_file
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.data.table import RecordTable
from wenlan_cli.errors import DataError

__all__ = ["read_brivl_jsonl"]

_FIELDS = ["image_id", "sentences", "bbox"]


def _parse_line(where: str, row: Mapping, root: InsideResolver) -> ImageTextRecord:
    image_id = row.get("image_id")
    if image_id is None:
        raise DataError(f"{where}: field 'image_id' is missing or null.")
    if not isinstance(image_id, str):
        raise DataError(
            f"{where}: field 'image_id' must be a string, got {json_type_name(image_id)} {quote_value(image_id)}."
        )
    where = f"{where} (image_id {quote_value(image_id)})"
    path = root.resolve(image_id, where)
    sentences = row.get("sentences")
    if sentences is None:
        raise DataError(f"{where}: field 'sentences' is missing or null.")
    if not isinstance(sentences, list):
        raise DataError(
            f"{where}: field 'sentences' must be a list of [kind, text] pairs, got {json_type_name(sentences)}."
        )
    if not sentences:
        raise DataError(f"{where}: field 'sentences' is an empty list.")
    captions: list[str] = []
    kinds: list[str] = []
    for j, pair in enumerate(sentences):
        if not isinstance(pair, list) or len(pair) != 2:
            shape = f"{len(pair)} items" if isinstance(pair, list) else json_type_name(pair)
            raise DataError(f"{where}: sentences[{j}] must be a [kind, text] pair, got {shape}.")
        kind, text = pair
        if not isinstance(kind, str):
            raise DataError(f"{where}: sentences[{j}][0] (the kind) must be a string, got {json_type_name(kind)}.")
        caption = clean_text(text, where, f"sentences[{j}][1]")
        if caption:
            captions.append(caption)
            kinds.append(kind)
    if not captions:
        raise DataError(f"{where}: all {len(sentences)} sentences are empty or whitespace.")
    boxes = parse_boxes(row.get("bbox"), where, "bbox")
    return ImageTextRecord(image_id=image_id, image_path=path, captions=captions, boxes=boxes, meta={"kinds": kinds})


def read_brivl_jsonl(data_dir: Path, split: str, *, check_images: bool = False) -> RecordTable:
    """Read ``DATA_DIR/{split}.jsonl``; records come back in file order, held as columns
    (`table.RecordTable`, a sequence of ImageTextRecords).

    Errors are DataErrors naming the file and the 1-based line number (and
    the image_id once known): invalid JSON or UTF-8, a line that is not an
    object, missing or wrongly typed fields, empty sentences, image paths that
    leave DATA_DIR, bad boxes, an image_id repeated on another line.
    `check_images` stats every image and names the first missing one.
    """
    root = Path(data_dir)
    path = split_file(root, split, ".jsonl", "brivl-jsonl")
    resolver = InsideResolver(root)
    rows, where = load_json_rows(path, "lines", _FIELDS, lambda w, row: _parse_line(w, row, resolver))
    records = parse_unique_rows(rows, where, lambda w, row: _parse_line(w, row, resolver))
    if check_images:
        check_image_files(records, where)
    return RecordTable.from_records(records, resolver.root_real, caption_meta=("kinds",))
