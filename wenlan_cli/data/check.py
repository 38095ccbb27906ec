"""`wenlan data check`: what is wrong with a dataset before a run trips over it.

Every image is read once: its bytes hashed (exact duplicates within a split, images
shared between splits), its header opened (size, for the boxes) and its end checked
(a JPEG without its end-of-image marker, a PNG without IEND: truncated), all without
decoding the pixels; `decode=True` decodes each image too. Captions are counted empty,
and too long for the tokenizer (how many would be truncated).
"""

from __future__ import annotations

import hashlib
import io
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..errors import DataError
from .records import ImageTextRecord

CHECKS = ("unreadable_images", "truncated_images", "empty_captions", "long_captions", "duplicate_images", "boxes_outside")
CHECK_TITLES = {
    "unreadable_images": "unreadable images",
    "truncated_images": "truncated images",
    "empty_captions": "empty captions",
    "long_captions": "captions to be truncated",
    "duplicate_images": "duplicate images",
    "boxes_outside": "boxes outside the image",
}
# EXIF orientations that swap width and height.
_SWAPS = {5, 6, 7, 8}


@dataclass
class ImageFacts:
    digest: str | None = None
    size: tuple[int, int] | None = None
    problem: str | None = None  # unreadable
    truncated: str | None = None


def record_bytes(record: ImageTextRecord) -> bytes:
    source = record.image_source
    if source is None:
        try:
            return record.image_path.read_bytes()
        except FileNotFoundError:
            raise DataError(f"{record.image_path}: the image file does not exist.") from None
        except OSError as exc:
            raise DataError(f"{record.image_path}: the image file cannot be read ({exc.strerror or exc}).") from None
    if hasattr(source, "read_bytes"):
        return source.read_bytes()
    buffer = io.BytesIO()
    source.load().save(buffer, format="PNG")
    return buffer.getvalue()


def truncation(data: bytes, fmt: str | None) -> str | None:
    """Why the encoded image is cut short, by its format's end marker (no decoding)."""
    if fmt in ("JPEG", "MPO") and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        return "the JPEG data has no end-of-image marker (the file is cut short)"
    if fmt == "PNG" and b"IEND" not in data[-16:]:
        return "the PNG data has no IEND chunk (the file is cut short)"
    return None


def inspect_image(record: ImageTextRecord, decode: bool) -> ImageFacts:
    from PIL import Image

    from .images import decode_image_bytes

    where = str(record.image_source) if record.image_source is not None else str(record.image_path)
    facts = ImageFacts()
    try:
        data = record_bytes(record)
    except DataError as exc:
        facts.problem = str(exc)
        return facts
    facts.digest = hashlib.blake2b(data, digest_size=16).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            fmt = image.format
            try:
                orientation = int(image.getexif().get(0x0112, 1))
            except Exception:
                orientation = 1
        facts.size = (height, width) if orientation in _SWAPS else (width, height)
    except Exception as exc:  # PIL raises many kinds for a bad header
        facts.problem = f"{where}: not a readable image ({type(exc).__name__}: {exc})."
        return facts
    why = truncation(data, fmt)
    if why:
        facts.truncated = f"{where}: {why}."
    if decode:
        try:
            decode_image_bytes(data, where)
        except DataError as exc:
            facts.problem = str(exc)
    return facts


def caption_lengths(captions: Sequence[str], tokenizer, batch: int = 4096) -> list[int]:
    lengths: list[int] = []
    for start in range(0, len(captions), batch):
        ids = tokenizer(list(captions[start : start + batch]), add_special_tokens=True, truncation=False)["input_ids"]
        lengths.extend(len(x) for x in ids)
    return lengths


def boxes_outside(record: ImageTextRecord, size: tuple[int, int]) -> list[str]:
    width, height = size
    bad = []
    for box in record.boxes or []:
        x1, y1, x2, y2 = box
        if x1 < 0 or y1 < 0 or x2 > width or y2 > height or x2 <= x1 or y2 <= y1:
            bad.append(f"{record.image_id}: box {list(box)} is outside the {width}x{height} image or empty")
    return bad


def check_split(records: Sequence[ImageTextRecord], *, tokenizer, max_length: int, decode: bool = False,
                workers: int | None = None, progress: Callable[[int], None] | None = None) -> tuple[dict, dict[str, str]]:
    """The findings of one split, and {content hash: image id} for the leakage check."""
    findings: dict[str, list[str]] = {name: [] for name in CHECKS}
    hashes: dict[str, str] = {}
    workers = workers or min(8, (os.cpu_count() or 1) * 2)
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for record, facts in zip(records, pool.map(lambda r: inspect_image(r, decode), records, chunksize=64)):
            if facts.problem:
                findings["unreadable_images"].append(facts.problem)
            if facts.truncated:
                findings["truncated_images"].append(facts.truncated)
            if facts.digest is not None:
                if facts.digest in hashes:
                    findings["duplicate_images"].append(f"{record.image_id} has the same bytes as {hashes[facts.digest]}")
                else:
                    hashes[facts.digest] = record.image_id
            if facts.size is not None and record.boxes:
                findings["boxes_outside"].extend(boxes_outside(record, facts.size))
            if not record.captions:
                findings["empty_captions"].append(f"{record.image_id}: no caption")
            findings["empty_captions"].extend(f"{record.image_id}: caption {i + 1} is empty" for i, c in enumerate(record.captions) if not c.strip())
            if progress:
                progress(1)
    texts = [(r.image_id, i, c) for r in records for i, c in enumerate(r.captions) if c.strip()]
    lengths = caption_lengths([c for _, _, c in texts], tokenizer) if texts else []
    findings["long_captions"] = [
        f"{image_id}: caption {i + 1} has {n} tokens (the maximum is {max_length})" for (image_id, i, _), n in zip(texts, lengths) if n > max_length
    ]
    report = {
        "images": len(records),
        "captions": sum(len(r.captions) for r in records),
        "max_caption_tokens": max(lengths, default=0),
        "counts": {name: len(items) for name, items in findings.items()},
        "findings": findings,
    }
    return report, hashes


def leakage(hashes: dict[str, dict[str, str]]) -> dict[str, list[str]]:
    """Images (by content) that occur in two splits: {"train/val": ["id in train = id in val", ...]}."""
    found: dict[str, list[str]] = defaultdict(list)
    names = list(hashes)
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            for digest, image_id in hashes[a].items():
                if digest in hashes[b]:
                    found[f"{a}/{b}"].append(f"{image_id} in {a} = {hashes[b][digest]} in {b}")
    return dict(found)


def total_problems(report: dict) -> int:
    return sum(sum(split["counts"].values()) for split in report["splits"].values()) + sum(len(v) for v in report["leakage"].values())


def check_dataset(
    dataset: str, data_dir, *, splits: Sequence[str] | None = None, tokenizer=None,
    char_tokenizer: Callable[[Iterable[str]], object] | None = None, max_length: int = 80,
    decode: bool = False, reader_options: dict | None = None, on_split: Callable[[str, int], None] | None = None,
    progress: Callable[[int], None] | None = None,
) -> dict:
    """The full report of `dataset` at `data_dir`: per split, what each check found, and the
    leakage between splits. Without `splits`, whichever of train/val/test loads (the others
    are listed under "not_read"). Captions are measured with `tokenizer` or, without one,
    with `char_tokenizer(captions)` (`models.tokenizer.char_tokenizer`: the character
    vocabulary a from-scratch run would build from these captions; passed in, since the
    data layer does not import the models)."""
    from .sources import STREAM_DATASET, load_records

    chosen = list(splits) if splits else ["train", "val", "test"]
    loaded: dict[str, list[ImageTextRecord]] = {}
    not_read: dict[str, str] = {}
    bad_samples: dict[str, list[str]] = {}
    for split in chosen:
        try:
            if dataset == STREAM_DATASET:  # a bad sample is a finding here, not a reason to stop
                from .shards import read_webdataset

                bad_samples[split] = []
                loaded[split] = read_webdataset(data_dir, split, skip_bad=True, bad=bad_samples[split])
            else:
                loaded[split] = load_records(dataset, data_dir, split, **(reader_options or {}))
        except DataError as exc:
            if splits:
                raise
            not_read[split] = str(exc)
    if not loaded:
        raise DataError(next(iter(not_read.values())))
    if tokenizer is None:
        if char_tokenizer is None:
            raise TypeError("check_dataset needs a tokenizer or a char_tokenizer to measure captions")
        tokenizer = char_tokenizer(c for records in loaded.values() for r in records for c in r.captions)
    report: dict = {"dataset": dataset, "data_dir": str(data_dir) if data_dir is not None else None, "max_length": max_length,
                    "decoded": decode, "splits": {}, "not_read": not_read}
    hashes = {}
    for split, records in loaded.items():
        if on_split:
            on_split(split, len(records))
        report["splits"][split], hashes[split] = check_split(records, tokenizer=tokenizer, max_length=max_length, decode=decode, progress=progress)
        if bad_samples.get(split):  # samples without image or readable JSON, truncated shards
            found = report["splits"][split]
            found["findings"]["unreadable_images"][:0] = bad_samples[split]
            found["counts"]["unreadable_images"] = len(found["findings"]["unreadable_images"])
    report["leakage"] = leakage(hashes)
    report["problems"] = total_problems(report)
    return report
