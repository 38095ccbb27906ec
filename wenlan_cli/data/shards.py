"""webdataset tar shards: the layout `wenlan data convert` writes, and reading it back.

A sample is two tar members sharing a key: the encoded image (``KEY.jpg``, ``.png``...)
and ``KEY.json`` with ``{"id", "captions", "boxes"}`` (plus ``text_ids`` when the
source has them). Keys are the sample's position in its split, zero-padded, because
webdataset groups members by the name before the first dot and image ids may hold dots.
Shards are ``{split}-{NNNNNN}.tar`` beside an ``index.json`` (counts, shard list,
source, options, and the training captions' character counts, so a run builds its
vocabulary without reading a caption).

Any webdataset reader (open_clip's, ``webdataset.WebDataset``) reads these shards;
this module adds what training needs on top: sample counts per shard without a scan,
and random access by byte offset for evaluation and `encode`.
"""

from __future__ import annotations

import json
import os
import tarfile
from dataclasses import dataclass
from pathlib import Path

from ..errors import DataError
from .images import MAX_IMAGE_PIXELS, decode_image_bytes, decode_image_bytes_resized
from .records import ImageTextRecord

FORMAT = "wenlan-webdataset"
VERSION = 1
INDEX_NAME = "index.json"
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp", "bmp", "gif", "tif", "tiff")


def shard_name(split: str, number: int) -> str:
    return f"{split}-{number:06d}.tar"


def sample_key(position: int) -> str:
    return f"{position:09d}"


@dataclass(frozen=True)
class ShardInfo:
    path: str
    samples: int


@dataclass
class ShardSplit:
    """The shards of one split, in order, with their sample counts."""

    split: str
    shards: list[ShardInfo]
    char_counts: dict[str, int] | None = None
    source: str = ""

    @property
    def samples(self) -> int:
        return sum(s.samples for s in self.shards)


@dataclass(frozen=True)
class TarMember:
    """An image stored in a shard, by byte range: picklable and small (an `ImageSource`)."""

    shard: str
    key: str
    offset: int
    size: int

    def describe(self) -> str:
        return f"shard {self.shard}, sample {self.key}"

    def __str__(self) -> str:
        return self.describe()

    def read_bytes(self) -> bytes:
        try:
            with open(self.shard, "rb") as handle:
                handle.seek(self.offset)
                data = handle.read(self.size)
        except OSError as exc:
            raise DataError(f"{self.describe()}: cannot be read ({exc.strerror or exc}).") from None
        if len(data) != self.size:
            raise DataError(f"{self.describe()}: the shard is truncated (the image ends after {len(data)} of {self.size} bytes).")
        return data

    def load(self, max_pixels: int | None = MAX_IMAGE_PIXELS):
        return decode_image_bytes(self.read_bytes(), self.describe(), max_pixels=max_pixels)

    def load_resized(self, size: int):
        """(image at size x size, displayed size), as `load_image_resized` gives the file."""
        return decode_image_bytes_resized(self.read_bytes(), self.describe(), size)


@dataclass(frozen=True)
class BadSample:
    """A sample that cannot be read (no image, an unreadable .json, cut off by a truncated
    shard), standing in as an `ImageSource` that fails when it is loaded: the command that
    reads it decides, with its --skip-bad, whether that stops the run (one sentence naming
    the shard and the sample) or is skipped and counted, as for an unreadable image file."""

    where: str
    problem: str

    def __str__(self) -> str:
        return self.where

    def read_bytes(self) -> bytes:
        raise DataError(self.problem)

    def load(self, max_pixels: int | None = MAX_IMAGE_PIXELS):
        raise DataError(self.problem)

    def load_resized(self, size: int):
        raise DataError(self.problem)


# --------------------------------------------------------------------------- samples


def split_member(name: str) -> tuple[str, str]:
    """(key, extension) of a member name, by webdataset's rule (the first dot of the base name)."""
    directory, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    return (f"{directory}/{stem}" if directory else stem), ext.lower()


def image_extension(files) -> str | None:
    return next((ext for ext in IMAGE_EXTENSIONS if ext in files), None)


def parse_meta(raw: bytes | None, where: str) -> dict:
    """The sample's JSON, checked: a non-empty list of non-empty captions, boxes as lists of 4 numbers."""
    if raw is None:
        raise DataError(f"{where}: the sample has no .json (captions).")
    try:
        meta = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{where}: the .json is not valid UTF-8 JSON ({exc}).") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: the .json is not an object.")
    captions = meta.get("captions")
    if isinstance(captions, str):
        captions = [captions]
    if not isinstance(captions, list) or not all(isinstance(c, str) for c in captions):
        raise DataError(f"{where}: 'captions' in the .json is not a list of strings.")
    meta["captions"] = captions
    boxes = meta.get("boxes")
    if boxes is not None and not (
        isinstance(boxes, list) and all(isinstance(b, list) and len(b) == 4 and all(isinstance(v, (int, float)) for v in b) for b in boxes)
    ):
        raise DataError(f"{where}: 'boxes' in the .json is not a list of [x1, y1, x2, y2].")
    meta.setdefault("id", where)
    meta["id"] = str(meta["id"])
    return meta


def check_training_sample(files: dict, where: str) -> tuple[bytes, dict]:
    """(image bytes, meta) of a sample that can train: it has an image and a caption."""
    ext = image_extension(files)
    if ext is None:
        raise DataError(f"{where}: the sample has no image (.jpg, .png, .webp...).")
    meta = parse_meta(files.get("json"), where)
    if not [c for c in meta["captions"] if c.strip()]:
        raise DataError(f"{where}: the sample has no caption.")
    return files[ext], meta


# --------------------------------------------------------------------------- where the shards are


def expand_pattern(pattern: str) -> list[str]:
    from braceexpand import braceexpand

    return list(braceexpand(pattern))


def read_index(folder: Path) -> dict | None:
    path = folder / INDEX_NAME
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"{path} is not a readable index ({exc}).") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT or not isinstance(index.get("splits"), dict):
        raise DataError(f"{path} is not an index written by `wenlan data convert` (format {FORMAT!r}).")
    return index


def count_samples(path: str, partial: bool = False) -> int:
    """Samples in a shard, from its headers alone (tarfile seeks past the data). A truncated
    shard raises DataError naming it, or with `partial` counts its whole samples and one
    more for what it lost, so that a reader reaching it reports the loss there."""
    samples, problem = scan_shard_status(path)
    if problem is not None and not partial:
        raise DataError(problem)
    return len(samples) + (problem is not None)


def scan_shard(path: str, partial: bool = False) -> list[tuple[str, dict[str, tuple[int, int]]]]:
    """[(key, {extension: (data offset, size)})] in shard order, reading headers only.
    A truncated shard raises DataError naming it, or with `partial` gives what it holds."""
    samples, problem = scan_shard_status(path)
    if problem is not None and not partial:
        raise DataError(problem)
    return samples


def scan_shard_status(path: str) -> tuple[list[tuple[str, dict[str, tuple[int, int]]]], str | None]:
    """`scan_shard`'s samples as far as the shard holds them whole, and why it could not be
    read to its end (None when it is whole)."""
    samples: list[tuple[str, dict[str, tuple[int, int]]]] = []
    try:
        with tarfile.open(path, "r:") as tar:
            for member in tar:
                if not member.isreg():
                    continue
                key, ext = split_member(member.name)
                if not samples or samples[-1][0] != key:
                    samples.append((key, {}))
                samples[-1][1][ext] = (member.offset_data, member.size)
    except (tarfile.TarError, EOFError, OSError) as exc:
        # The last sample read may lack members that the cut took away: it is lost too.
        return samples[:-1], f"shard {path} is truncated or not a tar file ({exc})."
    size = os.path.getsize(path)
    if samples:
        last = max(off + n for _, files in samples for off, n in files.values())
        if last > size:
            cut = samples[-1][0]
            return [(k, f) for k, f in samples if all(off + n <= size for off, n in f.values())], f"shard {path} is truncated (ends inside sample {cut})."
        if not _ends_with_end_marker(path, -(-last // 512) * 512, size):
            # tarfile takes a cut inside a header for the end of the archive.
            return samples, f"shard {path} is truncated (it ends after sample {samples[-1][0]} without the tar end-of-archive blocks)."
    return samples, None


def _ends_with_end_marker(path: str, end: int, size: int) -> bool:
    """Whether the bytes after the last member (from `end`) are the two or more zero blocks
    that end a tar archive (tarfile, GNU tar and webdataset write them)."""
    if size - end < 1024:
        return False
    with open(path, "rb") as handle:
        handle.seek(end)
        return not handle.read(1024).strip(b"\0")


def _index_split(folder: Path, index: dict, split: str) -> ShardSplit:
    entry = index["splits"].get(split)
    if entry is None:
        raise DataError(f"{folder / INDEX_NAME} has no split {split!r}; it has: {', '.join(sorted(index['splits'])) or 'none'}.")
    shards = [ShardInfo(str(folder / s["name"]), int(s["samples"])) for s in entry["shards"]]
    for shard in shards:
        if not os.path.isfile(shard.path):
            raise DataError(f"shard {shard.path}, listed in {folder / INDEX_NAME}, does not exist.")
    return ShardSplit(split, shards, entry.get("char_counts"), source=str(folder))


def resolve_shards(data_dir: str | Path, split: str, *, partial: bool = False) -> ShardSplit:
    """The shards of `split`: a folder written by `wenlan data convert`, or a brace pattern
    such as ``'shards/train-{000000..000099}.tar'``. A pattern names the shards of the
    split its files start with (``train-``...; a pattern of other names is the training
    split); other splits come from the ``index.json`` beside the shards. Shards without an
    index are counted from their headers (`partial`: a truncated one is counted, not refused)."""
    text = str(data_dir)
    if "{" not in text and not text.endswith(".tar"):
        folder = Path(text)
        if not folder.is_dir():
            raise DataError(f"the shard folder {folder} does not exist.")
        index = read_index(folder)
        if index is None:
            raise DataError(
                f"{folder} has no {INDEX_NAME}; write shards with `wenlan data convert`, or name them with a pattern "
                f"such as '{folder}/train-{{000000..000009}}.tar'."
            )
        return _index_split(folder, index, split)
    paths = expand_pattern(text)
    folder = Path(paths[0]).parent
    index = read_index(folder)
    names = [Path(p).name for p in paths]
    prefixes = {n.split("-")[0] for n in names}
    pattern_split = prefixes.pop() if len(prefixes) == 1 and all("-" in n for n in names) else "train"
    if split != pattern_split:
        if index is None:
            raise DataError(f"--data-dir {text} names {pattern_split} shards and {folder} has no {INDEX_NAME} for the {split} split.")
        return _index_split(folder, index, split)
    known = {}
    char_counts = None
    if index is not None and split in index["splits"]:
        known = {s["name"]: int(s["samples"]) for s in index["splits"][split]["shards"]}
        char_counts = index["splits"][split].get("char_counts")
    shards = []
    for path in paths:
        if not os.path.isfile(path):
            raise DataError(f"shard {path} (from --data-dir {text}) does not exist.")
        name = Path(path).name
        shards.append(ShardInfo(path, known[name] if name in known else count_samples(path, partial)))
    return ShardSplit(split, shards, char_counts, source=text)


# --------------------------------------------------------------------------- records (evaluation, encode, check)


def read_webdataset(data_dir: str | Path, split: str, *, skip_bad: bool = False, bad: list | None = None) -> list[ImageTextRecord]:
    """Every sample of `split` as a record whose image is read from the shard by byte range.
    A sample without image or readable JSON, and the samples a truncated shard lost, are
    records whose image fails to load naming shard and key (`BadSample`), so the command's
    --skip-bad decides; with `skip_bad` they are left out here and their messages appended
    to `bad` (a truncated shard: one message, and none of its samples)."""
    records: list[ImageTextRecord] = []
    for shard in resolve_shards(data_dir, split, partial=True).shards:
        samples, problem = scan_shard_status(shard.path)
        if problem is None and len(samples) < shard.samples:
            problem = f"shard {shard.path} holds {len(samples)} samples, fewer than the {shard.samples} its index lists (it is truncated)."
        if problem is not None and skip_bad:
            if bad is not None:
                bad.append(problem)
            continue
        with open(shard.path, "rb") as handle:
            for key, files in samples:
                record = _shard_record(handle, shard.path, key, files)
                if skip_bad and isinstance(record.image_source, BadSample):
                    if bad is not None:
                        bad.append(record.image_source.problem)
                    continue
                records.append(record)
        if problem is not None:  # the lost samples (their count from the index; one when it is unknown)
            name = Path(shard.path).name
            for n in range(max(shard.samples - len(samples), 1)):
                where = f"shard {shard.path}, sample #{len(samples) + n}"
                records.append(ImageTextRecord(image_id=f"{name}:#{len(samples) + n}", image_path=Path(shard.path), captions=[],
                                               image_source=BadSample(where, f"{problem.rstrip('.')}; sample #{len(samples) + n} is lost.")))
    return records


def _shard_record(handle, shard: str, key: str, files: dict) -> ImageTextRecord:
    """The record of one sample (`files` from `scan_shard`); a `BadSample` image when it has
    no image or its .json cannot be read."""
    where = f"shard {shard}, sample {key}"
    try:
        ext = image_extension(files)
        if ext is None:
            raise DataError(f"{where}: the sample has no image (.jpg, .png, .webp...).")
        raw = None
        if "json" in files:
            handle.seek(files["json"][0])
            raw = handle.read(files["json"][1])
        meta = parse_meta(raw, where)
    except DataError as exc:
        return ImageTextRecord(image_id=where, image_path=Path(shard), captions=[], meta={"shard_key": key},
                               image_source=BadSample(where, str(exc)))
    offset, size = files[ext]
    extra = {"text_ids": [str(t) for t in meta["text_ids"]]} if isinstance(meta.get("text_ids"), list) else {}
    extra["shard_key"] = key
    return ImageTextRecord(
        image_id=meta["id"], image_path=Path(shard), captions=meta["captions"], boxes=meta.get("boxes"),
        meta=extra, image_source=TarMember(shard, key, offset, size),
    )
