"""AI Challenger 2017 image captioning (AIC-ICC), in its released layout.

A release folder holds one annotation file and one image folder::

    ai_challenger_caption_train_20170902/
        caption_train_annotations_20170902.json
        caption_train_images_20170902/<image_id>

(likewise for validation, 20170910, and test A, 20180103). `data_dir` may be
the folder that holds the release folders or one release folder itself.

The annotation file is a JSON list of
``{"url": str, "image_id": "<name>.jpg", "caption": [5 strings]}``; an entry
may also carry ``"bbox": [[x1, y1, x2, y2], ...]`` in pixels of the image
(the synthetic dataset writes it). `url` is optional and kept in
``record.meta["url"]``. Captions are cleaned by `fields.clean_caption`;
empty ones are dropped.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from wenlan_cli.data import arrow_checks
from wenlan_cli.data._jsonfile import load_json_table, parse_unique_rows, rows_of_table
from wenlan_cli.data.fields import json_type_name, parse_boxes, parse_captions
from wenlan_cli.data.paths import InsideResolver, check_image_files, quote_value
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.data.table import RecordTable
from wenlan_cli.errors import DataError, UsageError

__all__ = ["AIC_SPLITS", "SPLIT_ALIASES", "AicSplit", "locate_split", "read_aic_icc"]


@dataclass(frozen=True)
class AicSplit:
    """Names of one AIC-ICC release: its folder, annotation file and image folder."""

    release: str
    annotations: str
    images: str


AIC_SPLITS: dict[str, AicSplit] = {
    "train": AicSplit(
        "ai_challenger_caption_train_20170902",
        "caption_train_annotations_20170902.json",
        "caption_train_images_20170902",
    ),
    "val": AicSplit(
        "ai_challenger_caption_validation_20170910",
        "caption_validation_annotations_20170910.json",
        "caption_validation_images_20170910",
    ),
    "test": AicSplit(
        "ai_challenger_caption_test_a_20180103",
        "caption_test_a_annotations_20180103.json",
        "caption_test_a_images_20180103",
    ),
}
SPLIT_ALIASES = {"validation": "val", "test_a": "test"}

_FIELDS = ["image_id", "caption", "url", "bbox"]


def locate_split(data_dir: Path, split: str) -> tuple[Path, Path]:
    """Return (annotation file, image folder) of `split` under `data_dir`.

    `data_dir` is either the parent of the release folders or the release
    folder itself (recognised by holding the annotation file). Raises
    UsageError for an unknown split and DataError, naming the names looked
    for, when the files are not there.
    """
    key = SPLIT_ALIASES.get(split, split)
    if key not in AIC_SPLITS:
        raise UsageError(f"unknown AIC-ICC split {split!r}; choose one of: {', '.join(AIC_SPLITS)}.")
    names = AIC_SPLITS[key]
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise DataError(f"the data folder {data_dir} does not exist or is not a folder.")
    for folder in (data_dir / names.release, data_dir):
        annotations = folder / names.annotations
        if annotations.is_file():
            images = folder / names.images
            if not images.is_dir():
                raise DataError(
                    f"{folder} holds {names.annotations} but not its image folder {names.images}/."
                )
            return annotations, images
    release = data_dir / names.release
    if release.is_dir():
        raise DataError(f"the AIC-ICC release folder {release} has no annotation file {names.annotations}.")
    hint = ""
    for other, other_names in AIC_SPLITS.items():
        if other != key and data_dir.name == other_names.release:
            hint = f" ({data_dir.name} is the {other} release; point the data folder at its parent)"
    raise DataError(
        f"no AIC-ICC {key} split in {data_dir}: looked for {names.release}/{names.annotations} "
        f"and {names.annotations}{hint}."
    )


def _parse_entry(where: str, row: Mapping, images: InsideResolver) -> ImageTextRecord:
    image_id = row.get("image_id")
    if image_id is None:
        raise DataError(f"{where}: field 'image_id' is missing or null.")
    if not isinstance(image_id, str):
        raise DataError(
            f"{where}: field 'image_id' must be a string, got {json_type_name(image_id)} {quote_value(image_id)}."
        )
    where = f"{where} (image_id {quote_value(image_id)})"
    path = images.resolve(image_id, where)
    captions = parse_captions(row.get("caption"), where, "caption")
    url = row.get("url")
    if url is not None and not isinstance(url, str):
        raise DataError(f"{where}: field 'url' must be a string, got {json_type_name(url)}.")
    boxes = parse_boxes(row.get("bbox"), where, "bbox")
    meta = {"url": url} if url is not None else {}
    return ImageTextRecord(image_id=image_id, image_path=path, captions=captions, boxes=boxes, meta=meta)


def read_aic_icc(data_dir: Path, split: str, *, check_images: bool = False) -> RecordTable:
    """Read one AIC-ICC split; records come back in file order, held as columns
    (`table.RecordTable`, a sequence of ImageTextRecords).

    Raises DataError naming the annotation file and the entry (0-based index
    and image_id) for: malformed JSON, a top level that is not a list, a
    missing or wrongly typed field, an empty caption list, captions that are
    all empty, an image path that leaves the image folder, bad boxes, and a
    duplicate image_id. Image files are not looked at unless `check_images`
    is true (one stat per image); then the missing ones are counted and the
    first is named.

    The file is parsed once, into Arrow columns that are checked whole
    (`arrow_checks`); only when a column is not plainly good are the rows
    checked one by one, to name the entry.
    """
    annotations, image_dir = locate_split(Path(data_dir), split)
    images = InsideResolver(image_dir)
    table, where = load_json_table(annotations, "array", lambda w, row: _parse_entry(w, row, images))
    records = _columns_table(table, images)
    if records is None:
        rows = rows_of_table(table, "array", _FIELDS)
        parsed = parse_unique_rows(rows, where, lambda w, row: _parse_entry(w, row, images))
        records = RecordTable.from_records(parsed, images.root_real)
    if check_images:
        check_image_files(records, where)
    return records


def _columns_table(table, images: InsideResolver) -> RecordTable | None:
    """The split as a RecordTable when every column passes the vectorised checks, else None."""
    import pyarrow as pa
    import pyarrow.compute as pc

    names = table.column_names
    if "image_id" not in names or "caption" not in names:
        return None
    ids = table.column("image_id").combine_chunks()
    if not arrow_checks.plain_names(ids):
        return None
    if pc.count_distinct(ids).as_py() != len(ids):
        return None
    urls = table.column("url").combine_chunks() if "url" in names else None
    if urls is not None and not pa.types.is_null(urls.type) and not arrow_checks.is_string(urls):
        return None
    captions = arrow_checks.clean_caption_lists(table.column("caption").combine_chunks())
    if captions is None:
        return None
    boxes = arrow_checks.checked_boxes(table.column("bbox").combine_chunks() if "bbox" in names else None)
    if boxes is None:
        return None
    if not arrow_checks.plain_symlinks_inside(images, ids):
        return None
    box_options = {} if boxes is True else dict(zip(("boxes", "box_offsets", "has_boxes"), boxes))
    has_urls = urls is not None and not pa.types.is_null(urls.type) and urls.null_count < len(urls)
    return RecordTable.from_columns(
        images.root_real, ids.cast(pa.large_string()), captions.flat, captions.offsets,
        urls=urls.cast(pa.large_string()) if has_urls else None, **box_options,
    )

