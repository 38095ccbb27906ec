"""Chinese retrieval benchmarks in Chinese-CLIP's preprocessed layout: MUGE, Flickr30k-CN, COCO-CN.

The community distributes these benchmarks (Chinese-CLIP ships MUGE and
Flickr30k-CN ready-made; its tools write COCO-CN the same way) as one folder
per dataset::

    MUGE/                     # --data-dir: this folder, the one holding it, or DATAPATH with datasets/MUGE
        train_imgs.tsv        # image_id<TAB>base64 of the encoded image file, one image per line
        train_texts.jsonl     # {"text_id": 8428, "text": "高级感托特包斜挎", "image_ids": [1076345, 517602]}
        valid_imgs.tsv
        valid_texts.jsonl
        test_imgs.tsv
        test_texts.jsonl

Splits are ``train``, ``valid`` and ``test`` (``val`` and ``validation`` are
accepted for ``valid``). A text may list several gold images; a test set whose
pairs are not public (MUGE's) has ``"image_ids": []`` on every line and is
refused with a message saying so.

Records: one per image of ``{split}_imgs.tsv``, in file order. Its captions are
the texts that list it (file order) and ``meta["text_ids"]`` their ids, so a
text listing several images appears in each of their records and is still
evaluated once, with all of them as gold (Chinese-CLIP's evaluation: text->image
is a hit when any gold image is in the top K, image->text when any text listing
the image is). Images no text lists stay in the evaluation splits as
distractors (Chinese-CLIP ranks every image of the split) and are dropped from
``train``, where they would form no pair.

The TSV is never decoded at once: reading a split indexes it (one pass over the
file, memory-mapped; the byte range of every image's base64), and each record
carries a small picklable `TsvImage` that reads and decodes its own line when a
DataLoader worker asks for it, by the rules of `images.load_image` (pixel limit,
truncation, CMYK, alpha, EXIF...). Both base64 alphabets are accepted (standard,
as Chinese-CLIP's docs write it, and URL-safe, as its loaders read it).
``record.image_path`` is the TSV file; the pixels come from ``record.image_source``.
"""

from __future__ import annotations

import base64
import binascii
import mmap
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from wenlan_cli.data.fields import clean_text, json_type_name
from wenlan_cli.data.files import read_json_lines
from wenlan_cli.data.images import MAX_IMAGE_PIXELS, decode_image_bytes
from wenlan_cli.data.paths import quote_value
from wenlan_cli.data.table import RecordTable
from wenlan_cli.errors import DataError, UsageError

__all__ = [
    "BENCHMARKS",
    "SPLITS",
    "Benchmark",
    "BenchmarkText",
    "TsvImage",
    "index_image_tsv",
    "locate_split",
    "read_chinese_clip",
    "read_coco_cn",
    "read_flickr30k_cn",
    "read_muge",
    "read_texts_jsonl",
]


@dataclass(frozen=True)
class Benchmark:
    """One dataset: its --dataset name, Chinese-CLIP's folder name, and whether its
    test texts come without their gold images."""

    name: str
    folder: str
    unlabelled_test: bool = False


BENCHMARKS: dict[str, Benchmark] = {
    "muge": Benchmark("muge", "MUGE", unlabelled_test=True),
    "flickr30k-cn": Benchmark("flickr30k-cn", "Flickr30k-CN"),
    "coco-cn": Benchmark("coco-cn", "COCO-CN"),
}
SPLITS = ("train", "valid", "test")
SPLIT_ALIASES = {"val": "valid", "validation": "valid", "dev": "valid"}

_URLSAFE_TO_STANDARD = bytes.maketrans(b"-_", b"+/")


# --------------------------------------------------------------------------- images


@dataclass(frozen=True)
class TsvImage:
    """One image of a ``{split}_imgs.tsv``: the byte range of its base64 on `line`.

    Picklable and small; `load` opens the file, reads that range and decodes it.
    `file_size` is the size the index was made from: a file changed since is an error
    rather than garbage.
    """

    path: str
    line: int
    image_id: str
    start: int
    stop: int
    file_size: int

    def describe(self) -> str:
        return f"{self.path} line {self.line} (image_id {self.image_id})"

    def __str__(self) -> str:
        return self.describe()

    def read_bytes(self) -> bytes:
        """The encoded image file (base64 decoded), without decoding the pixels."""
        where = self.describe()
        try:
            with open(self.path, "rb") as handle:
                size = os.fstat(handle.fileno()).st_size
                if size != self.file_size:
                    raise DataError(
                        f"{where}: the file changed after it was indexed ({self.file_size:,} -> {size:,} bytes); read the split again."
                    )
                handle.seek(self.start)
                payload = handle.read(self.stop - self.start)
        except FileNotFoundError:
            raise DataError(f"{where}: the file no longer exists.") from None
        except OSError as exc:
            raise DataError(f"{where}: cannot be read ({exc.strerror or exc}).") from None
        return decode_base64(payload, where)

    def load(self, max_pixels: int | None = MAX_IMAGE_PIXELS):
        """The decoded RGB image (DataError naming the file, line and image_id on failure)."""
        return decode_image_bytes(self.read_bytes(), self.describe(), max_pixels=max_pixels)


def decode_base64(payload: bytes, where: str) -> bytes:
    """Standard or URL-safe base64 (padding optional) to bytes, or a DataError naming `where`."""
    data = payload.strip().translate(_URLSAFE_TO_STANDARD)
    if not data:
        raise DataError(f"{where}: the image data is empty.")
    if len(data) % 4 == 1:
        raise DataError(f"{where}: the image data is not valid base64 (its length, {len(data):,}, is impossible for base64).")
    if len(data) % 4:
        data += b"=" * (-len(data) % 4)
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        bad = next((chr(b) for b in data if chr(b) not in _B64_CHARS), None)
        detail = f"it holds the character {bad!r}" if bad is not None else str(exc)
        raise DataError(f"{where}: the image data is not valid base64 ({detail}).") from None


_B64_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _short_id(raw: bytes) -> str:
    return quote_value(raw.decode("utf-8", "replace"))


def index_image_tsv(path: Path | str) -> dict[str, TsvImage]:
    """Index ``image_id<TAB>base64`` lines: image_id -> `TsvImage`, in file order.

    One memory-mapped pass; the base64 is not decoded (each image is decoded when it is
    used). Blank lines are skipped; CRLF line ends are accepted. Raises DataError naming
    the file and 1-based line for a line without a tab or with more than one, an empty
    or non-UTF-8 image id, an empty image field, a duplicate image id (naming the first
    line) and a file without any image.
    """
    path = Path(path)
    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if size == 0:
        raise DataError(f"{path} is empty: it lists no images.")
    absolute = os.path.abspath(path)
    index: dict[str, TsvImage] = {}
    try:
        with open(path, "rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as mm:
            pos, line = 0, 0
            while pos < size:
                line += 1
                newline = mm.find(b"\n", pos)
                end = size if newline < 0 else newline
                stop = end - 1 if end > pos and mm[end - 1] == 0x0D else end
                where = f"{path} line {line}"
                if stop - pos < 64 and not mm[pos:stop].strip():
                    pos = end + 1
                    continue
                tab = mm.find(b"\t", pos, stop)
                if tab < 0:
                    raise DataError(f"{where}: expected 'image_id<TAB>base64', but the line has no tab.")
                if mm.find(b"\t", tab + 1, stop) >= 0:
                    raise DataError(f"{where}: expected two tab-separated fields, 'image_id<TAB>base64', but found more.")
                raw_id = mm[pos:tab]
                try:
                    image_id = raw_id.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise DataError(f"{where}: the image id {_short_id(raw_id)} is not UTF-8 text.") from None
                if not image_id:
                    raise DataError(f"{where}: the image id before the tab is empty.")
                if tab + 1 >= stop or not mm[tab + 1 : min(stop, tab + 65)].strip():
                    raise DataError(f"{where} (image_id {quote_value(image_id)}): there is no image data after the tab.")
                first = index.get(image_id)
                if first is not None:
                    raise DataError(f"{where}: image_id {quote_value(image_id)} appears again (first on line {first.line}).")
                index[image_id] = TsvImage(absolute, line, image_id, tab + 1, stop, size)
                pos = end + 1
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if not index:
        raise DataError(f"{path} holds only blank lines: it lists no images.")
    return index


@dataclass(frozen=True, eq=False)
class TsvImages:
    """The `TsvImage` of each record of a split, as numpy columns (a `RecordTable`'s
    sources): `sources(i, image_id)` builds record i's."""

    path: str
    file_size: int
    lines: np.ndarray
    starts: np.ndarray
    stops: np.ndarray

    def __call__(self, i: int, image_id: str) -> TsvImage:
        return TsvImage(self.path, int(self.lines[i]), image_id, int(self.starts[i]), int(self.stops[i]), self.file_size)


# --------------------------------------------------------------------------- texts


@dataclass(frozen=True)
class BenchmarkText:
    """One line of ``{split}_texts.jsonl``. Ids are kept as strings (the TSV's image ids
    are text; a JSON integer 1000002 names the TSV id "1000002")."""

    text_id: str
    text: str
    image_ids: tuple[str, ...]
    line: int


def _json_id(value: object, where: str, name: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise DataError(f"{where}: {name} must be an integer, got {json_type_name(value)} {quote_value(value)}.")
    if isinstance(value, str):
        value = value.strip()
        if not value:
            raise DataError(f"{where}: {name} is an empty string.")
    return str(value)


def read_texts_jsonl(path: Path | str) -> list[BenchmarkText]:
    """Parse ``{"text_id", "text", "image_ids"}`` lines (blank lines skipped).

    Raises DataError naming the file and 1-based line for: bytes that are not UTF-8, a
    line that is not JSON or not an object, a missing or mistyped field, an empty text,
    and a duplicate text_id (naming the first line). Repeated ids inside one
    ``image_ids`` list count once.
    """
    path = Path(path)
    texts: list[BenchmarkText] = []
    seen: dict[str, int] = {}
    for number, obj in read_json_lines(path):
        where = f"{path} line {number}"
        for name in ("text_id", "text", "image_ids"):
            if name not in obj or obj[name] is None:
                raise DataError(f"{where}: field {name!r} is missing or null.")
        text_id = _json_id(obj["text_id"], where, "field 'text_id'")
        where = f"{where} (text_id {text_id})"
        text = clean_text(obj["text"], where, "field 'text'")
        if not text:
            raise DataError(f"{where}: field 'text' is empty or whitespace.")
        ids = obj["image_ids"]
        if not isinstance(ids, list):
            raise DataError(f"{where}: field 'image_ids' must be a list of integers, got {json_type_name(ids)}.")
        image_ids = tuple(dict.fromkeys(_json_id(v, where, f"image_ids[{j}]") for j, v in enumerate(ids)))
        if text_id in seen:
            raise DataError(f"{where}: text_id {text_id} appears again (first on line {seen[text_id]}).")
        seen[text_id] = number
        texts.append(BenchmarkText(text_id, text, image_ids, number))
    return texts


# --------------------------------------------------------------------------- splits


def _canonical_split(benchmark: Benchmark, split: str) -> str:
    key = SPLIT_ALIASES.get(split, split)
    if key not in SPLITS:
        raise UsageError(
            f"unknown {benchmark.folder} split {split!r}; choose one of: {', '.join(SPLITS)} "
            f"(Chinese-CLIP's names; 'val' also means valid)."
        )
    return key


def locate_split(data_dir: Path | str, split: str, benchmark: Benchmark) -> tuple[Path, Path]:
    """(``{split}_texts.jsonl``, ``{split}_imgs.tsv``) in `data_dir`, in its ``{folder}/``
    (any letter case) or in its ``datasets/{folder}/`` (Chinese-CLIP's DATAPATH)."""
    data_dir = Path(data_dir)
    split = _canonical_split(benchmark, split)
    texts_name, images_name = f"{split}_texts.jsonl", f"{split}_imgs.tsv"
    candidates = [data_dir]
    for parent in (data_dir, data_dir / "datasets"):
        if parent.is_dir():
            candidates += sorted(p for p in parent.iterdir() if p.is_dir() and p.name.lower() == benchmark.folder.lower())
    for folder in candidates:
        texts, images = folder / texts_name, folder / images_name
        if texts.is_file() and images.is_file():
            return texts, images
        if texts.is_file() or images.is_file():
            have, lack = (texts_name, images_name) if texts.is_file() else (images_name, texts_name)
            raise DataError(f"{folder} holds {have} but not {lack}; a {benchmark.folder} split needs both{_hint(benchmark, split)}.")
    there = sorted(p.name[: -len("_texts.jsonl")] for p in data_dir.glob("*_texts.jsonl"))
    found = f"splits there: {', '.join(there)}" if there else "no *_texts.jsonl files there"
    raise DataError(
        f"no {benchmark.folder} {split} split in {data_dir}: looked for {texts_name} and {images_name} there, "
        f"in {benchmark.folder}/ and in datasets/{benchmark.folder}/ ({found}){_hint(benchmark, split)}."
    )


def _hint(benchmark: Benchmark, split: str) -> str:
    if benchmark.unlabelled_test and split == "test":
        return (f" ({benchmark.folder}'s test pairs are not public: its test set is scored by the "
                f"{benchmark.folder} leaderboard; evaluate on --split valid)")
    return ""


def read_chinese_clip(data_dir: Path, split: str, benchmark: str | Benchmark) -> RecordTable:
    """Records of one split of a benchmark in Chinese-CLIP's layout (see the module doc),
    held as columns (`table.RecordTable`, a sequence of ImageTextRecords).

    Raises UsageError for an unknown split and DataError, naming the file and line, for
    bad lines (see `read_texts_jsonl`, `index_image_tsv`), a text whose ``image_ids``
    is empty while others are not, a split whose texts list no images at all (MUGE's
    test set), and a text naming an image id the TSV does not hold.
    """
    bench = BENCHMARKS[benchmark] if isinstance(benchmark, str) else benchmark
    key = _canonical_split(bench, split)
    texts_path, images_path = locate_split(data_dir, key, bench)
    texts = read_texts_jsonl(texts_path)
    if not texts:
        raise DataError(f"{texts_path} holds no texts.")
    listed = [t for t in texts if t.image_ids]
    if not listed:
        if bench.unlabelled_test and key == "test":
            raise DataError(
                f"{texts_path}: {bench.folder}'s test texts come without their gold images (image_ids is [] on every "
                f"line; the test set is scored by the {bench.folder} leaderboard), so it cannot be evaluated here; "
                f"use --split valid."
            )
        raise DataError(
            f"{texts_path}: no text lists its images (image_ids is [] on all {len(texts)} lines), so the {key} split "
            f"has no image-text pairs to evaluate or train on."
        )
    if len(listed) != len(texts):
        first = next(t for t in texts if not t.image_ids)
        raise DataError(
            f"{texts_path} line {first.line}: text_id {first.text_id} lists no images (image_ids is []) while "
            f"{len(listed)} other texts do; every text needs its gold images ({len(texts) - len(listed)} without)."
        )
    images = index_image_tsv(images_path)
    unknown = [(t, i) for t in texts for i in t.image_ids if i not in images]
    if unknown:
        text, image_id = unknown[0]
        more = f" ({len(unknown)} references to unknown images in all)" if len(unknown) > 1 else ""
        raise DataError(
            f"{texts_path} line {text.line}: text_id {text.text_id} refers to image_id {quote_value(image_id)}, "
            f"which is not in {images_path}{more}."
        )
    captions: dict[str, list[BenchmarkText]] = {}
    for text in texts:
        for image_id in text.image_ids:
            captions.setdefault(image_id, []).append(text)
    return _split_table(images, captions, keep_uncaptioned=key != "train")


def _split_table(images: dict[str, TsvImage], captions: dict[str, list[BenchmarkText]], keep_uncaptioned: bool) -> RecordTable:
    """One record per image of the TSV (those no text lists only when `keep_uncaptioned`),
    held as columns: captions with their text ids, the TSV line, and the byte ranges its
    `TsvImage` is made from when the record is built."""
    kept = [source for image_id, source in images.items() if keep_uncaptioned or captions.get(image_id)]
    own = [captions.get(source.image_id, []) for source in kept]
    counts = np.fromiter((len(texts) for texts in own), dtype=np.int64, count=len(kept))
    first = next(iter(images.values()))
    lines = np.fromiter((source.line for source in kept), dtype=np.int64, count=len(kept))
    sources = TsvImages(first.path, first.file_size, lines,
                        np.fromiter((source.start for source in kept), dtype=np.int64, count=len(kept)),
                        np.fromiter((source.stop for source in kept), dtype=np.int64, count=len(kept)))
    return RecordTable.from_columns(
        os.path.dirname(first.path), pa.array([source.image_id for source in kept], type=pa.large_string()),
        pa.array([t.text for texts in own for t in texts], type=pa.large_string()), np.concatenate([[0], np.cumsum(counts)]),
        paths=pa.array([os.path.basename(first.path)] * len(kept), type=pa.large_string()),
        record_meta={"line": pa.array(lines)},
        caption_meta={"text_ids": pa.array([t.text_id for texts in own for t in texts], type=pa.large_string())},
        sources=sources,
    )


def read_muge(data_dir: Path, split: str) -> RecordTable:
    """MUGE retrieval (e-commerce queries; several gold images per text)."""
    return read_chinese_clip(data_dir, split, "muge")


def read_flickr30k_cn(data_dir: Path, split: str) -> RecordTable:
    """Flickr30k-CN (five Chinese captions per image)."""
    return read_chinese_clip(data_dir, split, "flickr30k-cn")


def read_coco_cn(data_dir: Path, split: str) -> RecordTable:
    """COCO-CN."""
    return read_chinese_clip(data_dir, split, "coco-cn")
