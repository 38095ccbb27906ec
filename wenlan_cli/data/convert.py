"""`wenlan data convert`: any readable dataset -> webdataset tar shards per split.

Resumable and never half-written: each shard is written to a hidden temporary file and
renamed when whole, after its counts were saved under ``OUT/.convert/``; a second run
with the same options keeps the finished shards and writes only the missing ones. The
index (``index.json``, see `shards`) is written last, so its presence means the
conversion is complete.
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from ..errors import DataError, UsageError
from .records import ImageTextRecord
from .shards import FORMAT, INDEX_NAME, VERSION, sample_key, shard_name

STATE_DIR = ".convert"
SOURCES = ("aic-icc", "brivl-jsonl", "jsonl", "csv", "muge", "flickr30k-cn", "coco-cn", "folder", "synth")
DEFAULT_SPLITS = ("train", "val", "test")
_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp", "BMP": "bmp", "GIF": "gif", "TIFF": "tiff", "MPO": "jpg"}


def folder_records(folder: Path) -> list[ImageTextRecord]:
    """An image folder as records: every image (recursively, sorted), its captions the
    non-blank lines of a ``.txt`` of the same name beside it, when there is one."""
    from .imagefiles import collect_image_paths
    from .files import read_text_lines

    records = []
    for path in collect_image_paths([folder]):
        text = path.with_suffix(".txt")
        captions = read_text_lines(text) if text.is_file() else []
        records.append(ImageTextRecord(image_id=path.relative_to(folder).as_posix(), image_path=path, captions=captions))
    return records


def read_source(source: str, src: Path, split: str, **options) -> list[ImageTextRecord]:
    from .sources import load_records

    if source == "folder":
        if not src.is_dir():
            raise DataError(f"the image folder {src} does not exist.")
        return folder_records(src)
    return load_records("aic-icc" if source == "synth" else source, src, split, **options)


def image_bytes(record: ImageTextRecord, max_side: int | None) -> tuple[bytes, str, list | None]:
    """(encoded image, extension, boxes) of a record: the file's own bytes when it is at
    most `max_side` on its longer side (or no `max_side`), else a JPEG re-encoded at that
    size with the boxes scaled. Raises DataError naming the image when it is not one."""
    from PIL import Image, UnidentifiedImageError

    source = record.image_source
    where = str(source) if source is not None else str(record.image_path)
    if source is not None and hasattr(source, "read_bytes"):
        data = source.read_bytes()
    elif source is not None:
        buffer = io.BytesIO()
        source.load().save(buffer, format="PNG")
        data = buffer.getvalue()
    else:
        try:
            data = Path(record.image_path).read_bytes()
        except OSError as exc:
            raise DataError(f"{where}: cannot be read ({exc.strerror or exc}).") from None
    try:
        with Image.open(io.BytesIO(data)) as image:
            fmt, size = image.format, image.size
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{where}: not a readable image ({exc}).") from None
    ext = _FORMATS.get(fmt or "")
    boxes = record.boxes
    if ext is not None and (max_side is None or max(size) <= max_side):
        return data, ext, boxes
    from .images import decode_image_bytes

    image = decode_image_bytes(data, where)
    width, height = image.size
    if max_side is not None and max(width, height) > max_side:
        scale = max_side / max(width, height)
        new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
        image = image.resize(new_size, Image.BICUBIC)
        if boxes is not None:
            sx, sy = new_size[0] / width, new_size[1] / height
            boxes = [[b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy] for b in boxes]
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=90)
    return buffer.getvalue(), "jpg", boxes


def _write_json(path: Path, value) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(value, ensure_ascii=False, sort_keys=True), encoding="utf-8")
    os.replace(tmp, path)


def _write_shard(path: Path, records: Sequence[ImageTextRecord], first: int, max_side: int | None, skip_bad: bool) -> dict:
    """Write `records` (positions `first`...) as one shard via a temporary file; its stats."""
    import webdataset

    from .chars import count_chars

    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    stats = {"name": path.name, "samples": 0, "captions": 0, "skipped": [], "char_counts": Counter()}
    try:
        with open(tmp, "wb") as handle:
            writer = webdataset.TarWriter(handle, mtime=0)
            try:
                for offset, record in enumerate(records):
                    try:
                        data, ext, boxes = image_bytes(record, max_side)
                    except DataError as exc:
                        if not skip_bad:
                            raise DataError(f"{exc} (pass --skip-bad to leave unreadable images out and count them)") from None
                        stats["skipped"].append(str(exc))
                        continue
                    meta = {"id": record.image_id, "captions": list(record.captions), "boxes": boxes}
                    if "text_ids" in record.meta:
                        meta["text_ids"] = list(record.meta["text_ids"])
                    writer.write({"__key__": sample_key(first + offset), ext: data,
                                  "json": json.dumps(meta, ensure_ascii=False).encode("utf-8")})
                    stats["samples"] += 1
                    stats["captions"] += len(record.captions)
                    count_chars(record.captions, stats["char_counts"])
            finally:
                writer.close()  # also on failure: the tar stream must not outlive the file
            handle.flush()
            os.fsync(handle.fileno())
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return {**stats, "tmp": tmp}


def _options_of(source: str, src: Path, shard_size: int, max_side: int | None, splits: Sequence[str]) -> dict:
    return {"from": source, "src": str(src.resolve()), "shard_size": shard_size, "max_side": max_side, "splits": list(splits)}


def _prepare_out(out: Path, options: dict) -> bool:
    """Make `out` ready; True when it already holds this finished conversion."""
    state = out / STATE_DIR
    if out.exists() and not out.is_dir():
        raise UsageError(f"the output {out} exists and is not a folder.")
    if out.is_dir():
        index = out / INDEX_NAME
        if index.is_file():
            written = json.loads(index.read_text(encoding="utf-8")).get("options")
            if written == options:
                return True
            raise UsageError(f"{out} already holds shards converted with other options ({written}); use another output folder.")
        if (state / "options.json").is_file():
            written = json.loads((state / "options.json").read_text(encoding="utf-8"))
            if written != options:
                raise UsageError(
                    f"{out} holds an unfinished conversion with other options ({written}); repeat those options to "
                    "continue it, or use another output folder."
                )
        elif any(out.iterdir()):
            raise UsageError(f"the output folder {out} is not empty and holds no conversion to continue; use a new folder.")
        for leftover in out.glob(".*.tmp-*"):  # shards of a killed run, never renamed
            leftover.unlink()
    state.mkdir(parents=True, exist_ok=True)
    _write_json(state / "options.json", options)
    return False


def _check_options(source: str, shard_size: int, max_side: int | None) -> None:
    if source not in SOURCES:
        raise UsageError(f"--from {source!r} is not a source; choose one of: {', '.join(SOURCES)}.")
    if shard_size < 1:
        raise UsageError("--shard-size must be at least 1.")
    if max_side is not None and max_side < 16:
        raise UsageError("--max-side must be at least 16 pixels.")


def _convert_split(records, split: str, out: Path, shard_size: int, max_side: int | None, skip_bad: bool, on_sample) -> dict:
    """Write one split's shards and return its index entry. A shard whose file and stats
    are both on disk was finished by an interrupted run and is kept, so a convert resumes."""
    state = out / STATE_DIR
    count = math.ceil(len(records) / shard_size)
    entries, char_counts, skipped = [], Counter(), []
    for number in range(count):
        path = out / shard_name(split, number)
        stats_path = state / f"{split}-{number:06d}.json"
        chunk = records[number * shard_size : (number + 1) * shard_size]
        if path.is_file() and stats_path.is_file():
            stats = json.loads(stats_path.read_text(encoding="utf-8"))
        else:
            stats = _write_shard(path, chunk, number * shard_size, max_side, skip_bad)
            tmp = stats.pop("tmp")
            _write_json(stats_path, stats)
            os.replace(tmp, path)
        entries.append({"name": stats["name"], "samples": stats["samples"]})
        char_counts.update(stats["char_counts"])
        skipped += stats["skipped"]
        if on_sample:
            on_sample(len(chunk))
    return {
        "samples": sum(e["samples"] for e in entries),
        "captions": sum(json.loads((state / f"{split}-{n:06d}.json").read_text(encoding="utf-8"))["captions"] for n in range(count)),
        "shards": entries,
        "skipped": len(skipped),
        "skipped_images": skipped[:100],
        "char_counts": dict(sorted(char_counts.items())),
    }


def convert_dataset(
    source: str,
    src: Path | str,
    out: Path | str,
    *,
    shard_size: int = 1000,
    max_side: int | None = None,
    splits: Sequence[str] | None = None,
    skip_bad: bool = False,
    reader_options: dict | None = None,
    on_split: Callable[[str, int], None] | None = None,
    on_sample: Callable[[int], None] | None = None,
    log: Callable[[str], None] | None = None,
) -> dict:
    """Convert `src` (read as `source`) into shards under `out`; returns the index.

    `splits=None` converts whichever of train/val/test the source has (a folder is one
    train split); naming splits makes a missing one an error. `on_split(split, samples)`
    and `on_sample(n)` drive a progress bar."""
    _check_options(source, shard_size, max_side)
    src, out = Path(src), Path(out)
    if not src.exists():
        raise DataError(f"the source {src} does not exist.")
    chosen = list(splits) if splits else (["train"] if source == "folder" else list(DEFAULT_SPLITS))
    options = _options_of(source, src, shard_size, max_side, chosen)
    if _prepare_out(out, options):
        if log:
            log(f"{out} already holds this conversion; nothing to do.")
        return json.loads((out / INDEX_NAME).read_text(encoding="utf-8"))
    index = {"format": FORMAT, "version": VERSION, "source": {"from": source, "path": str(src)}, "options": options, "splits": {}}
    for split in chosen:
        try:
            records = read_source(source, src, split, **(reader_options or {}))
        except DataError as exc:
            if splits:
                raise
            if log:
                log(f"no {split} split converted: {exc}")
            continue
        if not records:
            continue
        if on_split:
            on_split(split, len(records))
        index["splits"][split] = _convert_split(records, split, out, shard_size, max_side, skip_bad, on_sample)
    if not index["splits"]:
        raise DataError(f"{src} has no split to convert (read as {source}).")
    _write_json(out / INDEX_NAME, index)
    shutil.rmtree(out / STATE_DIR, ignore_errors=True)
    return index
