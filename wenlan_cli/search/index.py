"""A folder of images as an updatable index of unit vectors.

Layout of an index directory::

    index.json                 what the index is (see below); the one commit point
    vectors.<generation>.npy   (N, D) float32, L2-normalised, row i = manifest line i
    manifest.<generation>.jsonl  one JSON object per row, in row order:
                               {"path": "sub/cat.jpg", "size": 12345, "mtime_ns": ..., "sha256": ...}

``index.json`` holds the format and version, the images folder (absolute), the names
of the current vectors and manifest files, the row count and dimension, the images
left out as unreadable, and the identity of the checkpoint that encoded them:
its resolved path, the SHA-256, size and mtime of its ``model.safetensors`` and its
embedding size. Manifest paths are POSIX paths relative to the images folder, so a
moved folder keeps its index; rows are sorted by that path.

Updating: a file is unchanged when its size and modification time (ns) match the
manifest -- or, for an index built with ``hash_contents``, when its SHA-256 matches
(every file is then read on every run). Only new and changed files are encoded;
deleted ones are dropped. An index is only updated with the checkpoint that built it
(same weights hash), unless ``rebuild`` re-encodes everything.

Atomicity: a run writes new, uniquely named vectors and manifest files, then
replaces ``index.json`` with ``os.replace`` (after fsync). Until that rename the
previous ``index.json`` still names the previous, untouched files, so an interrupted
run never damages the index; its leftovers are deleted by the next successful run.
A lock file keeps two runs from updating one index at the same time.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.files import read_json, read_json_lines
from ..data.paths import InsideResolver, quote_value
from ..data.records import ImageTextRecord
from ..data.imagefiles import collect_image_paths
from ..errors import CheckpointError, DataError, UsageError

__all__ = [
    "ImageIndex",
    "IndexReport",
    "IndexRow",
    "build_index",
    "checkpoint_identity",
    "load_index",
    "update_index",
]

INDEX_FILE = "index.json"
FORMAT = "wenlan-image-index"
VERSION = 1
_LOCK_FILE = ".lock"


@dataclass(frozen=True)
class IndexRow:
    """One indexed image: its path relative to the images folder and what it looked like."""

    path: str
    size: int
    mtime_ns: int
    sha256: str | None = None

    def to_json(self) -> dict:
        row = {"path": self.path, "size": self.size, "mtime_ns": self.mtime_ns}
        if self.sha256 is not None:
            row["sha256"] = self.sha256
        return row


@dataclass
class ImageIndex:
    directory: Path
    images_dir: Path
    vectors: np.ndarray  # (N, D) float32, L2-normalised
    rows: list[IndexRow]
    checkpoint: dict
    hash_contents: bool = False
    skipped: list[dict] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    _inside: InsideResolver | None = field(default=None, init=False, repr=False, compare=False)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def file(self, row: int) -> Path:
        """The image file of row `row` (images folder / manifest path).

        Raises DataError naming the manifest row when the path, through a symlink,
        resolves outside the images folder: an index is data from elsewhere."""
        if self._inside is None:
            self._inside = InsideResolver(self.images_dir, "manifest path")
        path = self.rows[row].path
        self._inside.resolve(path, f"the index {self.directory} row {row + 1}")
        return self.images_dir / path


@dataclass
class IndexReport:
    """What one `update_index` run did; paths are relative to the images folder."""

    index: ImageIndex
    added: list[str]
    changed: list[str]
    removed: list[str]
    unchanged: int
    encoded: list[str]  # the files sent to the model (added + changed)
    skipped: list[dict]  # {"path", "error"} of unreadable images, left out
    rebuilt: bool
    written: bool  # False when nothing changed and the index was left as it was

    def summary(self) -> str:
        parts = [f"{len(self.added)} added", f"{len(self.changed)} changed", f"{len(self.removed)} removed",
                 f"{self.unchanged} unchanged"]
        text = (f"{len(self.index)} images in {self.index.directory} ({', '.join(parts)}; "
                f"encoded {len(self.encoded)}{', rebuilt' if self.rebuilt else ''})")
        if self.skipped:
            text += f"; left out {len(self.skipped)} unreadable image(s)"
        if not self.written:
            text += "; already up to date"
        return text


# --------------------------------------------------------------------------- identity


def _sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def checkpoint_identity(checkpoint: str | Path, known: dict | None = None) -> dict:
    """{"path", "model_sha256", "model_size", "model_mtime_ns", "embed_dim", "model"} of a
    checkpoint (or run) directory. The hash of `known` is reused when it describes the
    same file (same resolved path, size and mtime), so a large weights file is not
    re-read on every search."""
    from ..engine.checkpoint import model_config_of, resolve_checkpoint

    directory = resolve_checkpoint(checkpoint).resolve()
    weights = directory / "model.safetensors"
    try:
        stat = weights.stat()
    except OSError as exc:
        raise CheckpointError(f"{weights} cannot be read ({exc.strerror or exc}).") from None
    config = model_config_of(directory)
    if (
        known
        and known.get("path") == str(directory)
        and known.get("model_size") == stat.st_size
        and known.get("model_mtime_ns") == stat.st_mtime_ns
        and known.get("model_sha256")
    ):
        sha = known["model_sha256"]
    else:
        sha = _sha256_file(weights)
    return {
        "path": str(directory),
        "model_sha256": sha,
        "model_size": stat.st_size,
        "model_mtime_ns": stat.st_mtime_ns,
        "embed_dim": int(config.embed_dim),
        "model": config.name,
    }


def bundle_identity(bundle_dir: str | Path | None) -> dict:
    """The identity of an ONNX bundle of `wenlan export onnx`: that of the checkpoint it was
    exported (and verified) from, recorded in the bundle, plus the bundle's own path under
    "onnx". An index built on either backend can so be updated on the other."""
    from ..runtime.bundle import load_bundle

    if bundle_dir is None:
        raise UsageError("give --checkpoint: a bundle of `wenlan export onnx` to encode with on --backend onnx.")
    bundle = load_bundle(bundle_dir)
    identity = bundle.checkpoint
    if not identity.get("model_sha256"):
        raise CheckpointError(f"{bundle.directory} does not record the checkpoint it was exported from; export it again.")
    return {**identity, "onnx": str(bundle.directory.resolve())}


# --------------------------------------------------------------------------- reading


def _read_json(path: Path, what: str) -> dict:
    """A JSON object file; `what` says, when it does not exist, what that means."""
    return read_json(path, expect=dict, missing=what)


def load_index(index_dir: str | Path, mmap: bool = False) -> ImageIndex:
    """Read an index directory, checking that its files agree with each other.
    With `mmap` the vectors are memory-mapped read-only instead of read into memory."""
    directory = Path(index_dir)
    if not directory.is_dir():
        raise DataError(f"the index {directory} does not exist (build it with `wenlan index IMAGES_DIR --out {directory}`).")
    info = _read_json(directory / INDEX_FILE, f"{directory} is not a wenlan image index (build one with `wenlan index`)")
    if info.get("format") != FORMAT:
        raise DataError(f"{directory / INDEX_FILE} is not a wenlan image index (format {info.get('format')!r}).")
    if info.get("version") != VERSION:
        raise DataError(f"{directory / INDEX_FILE} has index version {info.get('version')!r}; this wenlan reads version {VERSION}.")
    try:
        vectors_name, manifest_name = info["vectors"], info["manifest"]
        count, dim = int(info["count"]), int(info["dim"])
        checkpoint = dict(info["checkpoint"])
        images_dir = _images_dir_of(info, directory)
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{directory / INDEX_FILE} lacks or garbles the field {exc}.") from None
    # index.json is data from elsewhere: the files it names must lie in the index folder.
    inside = InsideResolver(directory, "file name")
    vectors_path = inside.resolve(vectors_name, f"{directory / INDEX_FILE} field 'vectors'")
    manifest_path = inside.resolve(manifest_name, f"{directory / INDEX_FILE} field 'manifest'")
    try:
        vectors = np.load(vectors_path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise DataError(f"{vectors_path} is missing; the index {directory} is damaged (rebuild it with --rebuild).") from None
    except (OSError, ValueError) as exc:
        raise DataError(f"{vectors_path} is not a readable .npy file ({exc}).") from None
    if vectors.dtype != np.float32 or vectors.shape != (count, dim):
        raise DataError(
            f"{vectors_path} holds {vectors.dtype} {vectors.shape}, but {INDEX_FILE} says float32 {(count, dim)}."
        )
    rows: list[IndexRow] = []
    rows_inside = InsideResolver(images_dir, "manifest path")
    number = 0
    damaged = f"the index {directory} is damaged (rebuild it with --rebuild)"
    try:
        for number, item in read_json_lines(manifest_path, missing=damaged):
            path = rows_inside.check_written(item["path"], f"{manifest_path} line {number}")
            rows.append(IndexRow(path, int(item["size"]), int(item["mtime_ns"]), item.get("sha256")))
    except (KeyError, TypeError, ValueError) as exc:
        raise DataError(f"{manifest_path} line {number}: not a manifest row ({exc}).") from None
    if len(rows) != count:
        raise DataError(f"{manifest_path} has {len(rows)} rows, but {INDEX_FILE} says {count}.")
    return ImageIndex(
        directory=directory, images_dir=images_dir, vectors=vectors, rows=rows, checkpoint=checkpoint,
        hash_contents=bool(info.get("hash_contents", False)), skipped=list(info.get("skipped", [])), info=info,
    )


def _images_dir_of(info: dict, directory: Path) -> Path:
    """The images folder that index.json records: an absolute path (as `update_index` writes it)."""
    value = info["images_dir"]
    if not isinstance(value, str) or not value or "\x00" in value or not os.path.isabs(value):
        raise DataError(
            f"{directory / INDEX_FILE} field 'images_dir' must be the absolute path of the images folder, "
            f"not {quote_value(value)}."
        )
    return Path(value)


def recorded_images_dir(index_dir: str | Path) -> Path | None:
    """The images folder an index records, or None when its index.json cannot say
    (`load_index` then reports why)."""
    try:
        return _images_dir_of(load_index_info(index_dir), Path(index_dir))
    except (DataError, KeyError):
        return None


# --------------------------------------------------------------------------- writing


@contextlib.contextmanager
def _locked(directory: Path):
    try:
        import fcntl
    except ImportError:  # pragma: no cover - not POSIX: no lock
        yield
        return
    with open(directory / _LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            raise UsageError(f"another `wenlan index` run is updating {directory}; wait for it to finish.") from None
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _discard_failed_start(directory: Path, created: bool):
    """When a run that would write the first index.json of `directory` fails, remove
    what it wrote (generation files, the lock file) and the folder if it made it, so a
    failed first `wenlan index` leaves no folder that looks like a broken index."""
    fresh = not (directory / INDEX_FILE).exists()
    try:
        yield
    except BaseException:
        if fresh and not (directory / INDEX_FILE).exists():
            _remove_stale(directory, keep=set())
            with contextlib.suppress(OSError):
                (directory / _LOCK_FILE).unlink()
            if created:
                with contextlib.suppress(OSError):
                    directory.rmdir()  # only when nothing else is there
        raise


def _fsync(path: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _write_generation(directory: Path, vectors: np.ndarray, rows: list[IndexRow], info: dict) -> None:
    """Write the new files, then commit them by replacing index.json."""
    generation = f"{time.strftime('%Y%m%d%H%M%S')}-{secrets.token_hex(3)}"
    vectors_name, manifest_name = f"vectors.{generation}.npy", f"manifest.{generation}.jsonl"
    with open(directory / vectors_name, "wb") as handle:
        np.save(handle, np.ascontiguousarray(vectors, dtype=np.float32))
        handle.flush()
        os.fsync(handle.fileno())
    with open(directory / manifest_name, "w", encoding="utf-8") as handle:
        for row in rows:
            handle.write(json.dumps(row.to_json(), ensure_ascii=False) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    info = {**info, "vectors": vectors_name, "manifest": manifest_name}
    _commit(directory, info)
    _remove_stale(directory, keep={vectors_name, manifest_name})


def _commit(directory: Path, info: dict) -> None:
    temporary = directory / f"{INDEX_FILE}.{secrets.token_hex(4)}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(info, handle, ensure_ascii=False, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, directory / INDEX_FILE)
    _fsync(directory)


def _remove_stale(directory: Path, keep: set[str]) -> None:
    """Files of earlier generations and of interrupted runs."""
    for path in directory.iterdir():
        name = path.name
        stale = (
            (name.startswith("vectors.") and name.endswith(".npy"))
            or (name.startswith("manifest.") and name.endswith(".jsonl"))
            or (name.startswith(INDEX_FILE + ".") and name.endswith(".tmp"))
        )
        if stale and name not in keep:
            with contextlib.suppress(OSError):
                path.unlink()


def _scan(images_dir: Path, index_dir: Path, hash_contents: bool) -> list[tuple[IndexRow, Path]]:
    """Every image under `images_dir` (recursively), sorted by relative path."""
    index_resolved = index_dir.resolve()
    found = []
    for path in collect_image_paths([images_dir]):
        if index_resolved in path.resolve().parents:
            continue
        try:
            stat = path.stat()
        except OSError as exc:
            raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
        sha = _sha256_file(path) if hash_contents else None
        rel = path.relative_to(images_dir).as_posix()
        found.append((IndexRow(rel, stat.st_size, stat.st_mtime_ns, sha), path))
    found.sort(key=lambda item: item[0].path)
    return found


def _unchanged(old: IndexRow, new: IndexRow, hash_contents: bool) -> bool:
    if hash_contents and old.sha256 is not None and new.sha256 is not None:
        return old.sha256 == new.sha256
    return old.size == new.size and old.mtime_ns == new.mtime_ns


@dataclass
class _Plan:
    """What an update does to each scanned image: keep its old row, or encode it."""

    keep_old: dict[str, int]  # relative path -> row of the previous index
    to_encode: list[tuple[IndexRow, Path]]
    added: list[str]
    changed: list[str]
    removed: list[str]


def _check_folders(images_dir: Path, index_dir: Path) -> None:
    """Refuse before anything is written: a missing images folder, or an --out that is a
    file or a folder of something else (an update would delete its files as stale)."""
    if not images_dir.is_dir():
        raise DataError(f"the images folder {images_dir} does not exist or is not a folder.")
    if index_dir.exists() and not index_dir.is_dir():
        raise UsageError(f"--out {index_dir} is a file, not an index folder.")
    if index_dir.is_dir() and not (index_dir / INDEX_FILE).exists():
        extra = [p.name for p in index_dir.iterdir() if p.name != _LOCK_FILE and not _is_ours(p.name)]
        if extra:
            raise UsageError(f"--out {index_dir} is a folder that is not a wenlan index (it holds {extra[0]!r}); "
                             "give a new or empty folder.")


def _previous_index(index_dir: Path, images_dir: Path, rebuild: bool) -> ImageIndex | None:
    """The committed index to update (memory-mapped), or None to build anew; it must be
    of the same images folder, since an update drops every entry not found there."""
    previous = None
    if not rebuild and (index_dir / INDEX_FILE).exists():
        try:
            previous = load_index(index_dir, mmap=True)
        except DataError as exc:
            raise DataError(f"{exc} Pass --rebuild to build the index anew.") from None
    if previous is not None and previous.images_dir.resolve() != images_dir.resolve():
        raise UsageError(
            f"the index {index_dir} holds {len(previous.rows):,} images of {previous.images_dir}, not of "
            f"{images_dir}; pass --rebuild to replace them, or give another --out."
        )
    return previous


def _encoder_identity(checkpoint, previous: ImageIndex | None, backend: str, index_dir: Path) -> dict:
    """The identity of the checkpoint (or ONNX bundle) to encode with, defaulting to the
    index's own; vectors of two different weights must never share one index."""
    if checkpoint is None:
        if previous is None:
            raise UsageError("give --checkpoint: there is no index yet to take the checkpoint from.")
        checkpoint = previous.checkpoint.get("onnx") if backend == "onnx" else previous.checkpoint["path"]
    if backend == "onnx":
        identity = bundle_identity(checkpoint)
    else:
        identity = checkpoint_identity(checkpoint, known=previous.checkpoint if previous else None)
    if previous is not None and (
        previous.checkpoint.get("model_sha256") != identity["model_sha256"]
        or previous.checkpoint.get("embed_dim") != identity["embed_dim"]
    ):
        raise UsageError(
            f"the index {index_dir} was built with the checkpoint {previous.checkpoint.get('path')} "
            f"(weights sha256 {str(previous.checkpoint.get('model_sha256'))[:12]}), not {identity['path']} "
            f"(sha256 {identity['model_sha256'][:12]}); pass --rebuild to re-encode every image with the new one."
        )
    return identity


def _plan_update(scanned: list[tuple[IndexRow, Path]], previous: ImageIndex | None, hash_contents: bool) -> _Plan:
    """Compare the scan with the previous manifest: only new and changed files are encoded."""
    old_rows = {row.path: i for i, row in enumerate(previous.rows)} if previous is not None else {}
    plan = _Plan(keep_old={}, to_encode=[], added=[], changed=[], removed=[])
    for row, path in scanned:
        j = old_rows.get(row.path)
        if j is not None and _unchanged(previous.rows[j], row, hash_contents):
            plan.keep_old[row.path] = j
        else:
            (plan.changed if j is not None else plan.added).append(row.path)
            plan.to_encode.append((row, path))
    seen = {row.path for row, _ in scanned}
    plan.removed = [row.path for row in previous.rows if row.path not in seen] if previous is not None else []
    return plan


def _rows_to_index(scanned: list[tuple[IndexRow, Path]], plan: _Plan, new_vectors: dict, images_dir: Path) -> list[IndexRow]:
    """The scanned rows that have a vector (kept or just encoded), in path order; an
    index of no image at all is refused rather than committed."""
    rows = [row for row, _ in scanned if row.path in plan.keep_old or (row.path in new_vectors)]
    if not rows:
        what = f"no readable images under {images_dir}" if scanned else f"no images (jpg, png, webp, bmp) under {images_dir}"
        raise DataError(f"{what}; nothing to index.")
    return rows


def _assemble_vectors(
    rows: list[IndexRow], plan: _Plan, previous: ImageIndex | None, new_vectors: dict, dim: int
) -> np.ndarray:
    """The new generation's vectors in row order: kept rows copied from the previous
    index in one gather, the rest from this run's encodings."""
    vectors = np.empty((len(rows), dim), dtype=np.float32)
    old_positions = [(i, plan.keep_old[row.path]) for i, row in enumerate(rows) if row.path in plan.keep_old]
    if old_positions:
        dst, src = zip(*old_positions)
        vectors[list(dst)] = np.asarray(previous.vectors[list(src)])
    for i, row in enumerate(rows):
        if row.path in new_vectors:
            vectors[i] = new_vectors[row.path]
    return vectors


def _index_info(images_dir: Path, rows: list[IndexRow], identity: dict, hash_contents: bool, skipped: list) -> dict:
    """The index.json of a new generation, less the names of its files (`_write_generation`)."""
    return {
        "format": FORMAT,
        "version": VERSION,
        "images_dir": str(images_dir.resolve()),
        "count": len(rows),
        "dim": identity["embed_dim"],
        "hash_contents": hash_contents,
        "checkpoint": identity,
        "skipped": skipped,
        "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _is_up_to_date(previous: ImageIndex | None, rows: list[IndexRow], info: dict) -> bool:
    """Nothing changed since the committed generation: no new one is written, so an
    update that finds nothing to do leaves the index files (and their readers) alone."""
    return (
        previous is not None
        and previous.rows == rows
        and previous.skipped == info["skipped"]
        and previous.info.get("images_dir") == info["images_dir"]
        and previous.hash_contents == info["hash_contents"]
        and previous.checkpoint == info["checkpoint"]
    )


def _write_new_generation(index_dir: Path, vectors: np.ndarray, rows: list[IndexRow], info: dict) -> ImageIndex:
    """Commit a new generation and return it as loaded, without reading back the vectors
    just written."""
    _write_generation(index_dir, vectors, rows, info)
    return ImageIndex(index_dir, Path(info["images_dir"]), vectors, rows, info["checkpoint"], info["hash_contents"],
                      info["skipped"], load_index_info(index_dir))


def update_index(
    images_dir: str | Path,
    index_dir: str | Path,
    checkpoint: str | Path | None = None,
    *,
    rebuild: bool = False,
    hash_contents: bool | None = None,
    skip_bad: bool = False,
    batch_size: int = 64,
    workers: int = 0,
    device: str = "cpu",
    precision: str = "fp32",
    backend: str = "torch",
    on_start: Callable[[int], None] | None = None,
    on_batch: Callable[[int], None] | None = None,
) -> IndexReport:
    """Bring the index in `index_dir` up to date with the images under `images_dir`.

    Builds it when there is none (or with `rebuild`). `checkpoint` defaults to the one
    the existing index was built with. `hash_contents` (default: the existing index's
    setting, else False) records and compares SHA-256 hashes of the files. `on_start`
    gets the number of images to encode, `on_batch` the images done per batch.
    `backend="onnx"` encodes on onnxruntime with a bundle of `wenlan export onnx` given as
    `checkpoint` (default: the bundle the index recorded); its vectors count as the
    checkpoint's it was verified against, so either backend updates the index.

    Raises UsageError for a checkpoint other than the index's own (without `rebuild`),
    DataError for unreadable images (unless `skip_bad`) or a folder without images.
    """
    images_dir = Path(images_dir)
    index_dir = Path(index_dir)
    _check_folders(images_dir, index_dir)
    created = not index_dir.exists()
    index_dir.mkdir(parents=True, exist_ok=True)
    with _locked(index_dir), _discard_failed_start(index_dir, created):
        previous = _previous_index(index_dir, images_dir, rebuild)
        identity = _encoder_identity(checkpoint, previous, backend, index_dir)
        if hash_contents is None:
            hash_contents = previous.hash_contents if previous is not None else False
        scanned = _scan(images_dir, index_dir, hash_contents)
        plan = _plan_update(scanned, previous, hash_contents)
        new_vectors, failures = _encode(plan.to_encode, identity, backend=backend, skip_bad=skip_bad,
                                        batch_size=batch_size, workers=workers, device=device, precision=precision,
                                        on_start=on_start, on_batch=on_batch)
        failed = {path for path, _ in failures}
        rows = _rows_to_index(scanned, plan, new_vectors, images_dir)
        vectors = _assemble_vectors(rows, plan, previous, new_vectors, identity["embed_dim"])
        skipped = [{"path": path, "error": message} for path, message in failures]
        info = _index_info(images_dir, rows, identity, hash_contents, skipped)
        up_to_date = _is_up_to_date(previous, rows, info)
        index = load_index(index_dir) if up_to_date else _write_new_generation(index_dir, vectors, rows, info)
    return IndexReport(
        index=index,
        added=[path for path in plan.added if path not in failed],
        changed=[path for path in plan.changed if path not in failed],
        removed=plan.removed, unchanged=len(plan.keep_old),
        encoded=[row.path for row, _ in plan.to_encode], skipped=skipped, rebuilt=rebuild, written=not up_to_date,
    )


def build_index(images_dir: str | Path, index_dir: str | Path, checkpoint: str | Path, **options) -> IndexReport:
    """Encode every image under `images_dir` into a new index (an existing one is replaced)."""
    return update_index(images_dir, index_dir, checkpoint, rebuild=True, **options)


def load_index_info(index_dir: str | Path) -> dict:
    """The index.json of an index directory."""
    return _read_json(Path(index_dir) / INDEX_FILE, "it is not a wenlan image index")


def _is_ours(name: str) -> bool:
    return (name.startswith(("vectors.", "manifest.", INDEX_FILE + ".")))


def encode_images(*args, **kwargs):
    """`wenlan_cli.encode.encode_images`, imported on first use: it needs torch, which
    indexing on the ONNX backend does without."""
    from ..encode import encode_images as encode

    return encode(*args, **kwargs)


def _encode(to_encode, identity, *, backend="torch", skip_bad, batch_size, workers, device, precision, on_start, on_batch):
    """{relative path: vector} of the images to (re-)encode, and the unreadable ones."""
    if on_start is not None:
        on_start(len(to_encode))
    if not to_encode:
        return {}, []
    if backend == "onnx":
        from ..backends import OnnxBackend

        records = [ImageTextRecord(image_id=row.path, image_path=path, captions=[]) for row, path in to_encode]
        embeddings, kept, bad = OnnxBackend(identity["onnx"]).encode_images(
            records, batch_size=batch_size, workers=workers, skip_bad=skip_bad, on_batch=on_batch)
        embeddings = embeddings / np.maximum(np.linalg.norm(embeddings, axis=1, keepdims=True), 1e-12)
        vectors = {to_encode[i][0].path: embeddings[n] for n, i in enumerate(kept)}
        return vectors, [(to_encode[i][0].path, message) for i, message in bad]
    import torch

    from ..loading import load_checkpoint
    from ..engine.device import pick_device

    dev = pick_device(device)
    loaded = load_checkpoint(identity["path"], device=dev)
    records = [ImageTextRecord(image_id=row.path, image_path=path, captions=[]) for row, path in to_encode]
    result = encode_images(loaded.model, records, loaded.settings, device=dev, batch_size=batch_size,
                           workers=workers, skip_bad=skip_bad, precision=precision, on_batch=on_batch)
    embeddings = result.embeddings.to(torch.float32)
    embeddings = torch.nn.functional.normalize(embeddings, dim=1).numpy()
    vectors = {to_encode[i][0].path: embeddings[n] for n, i in enumerate(result.kept)}
    failures = [(to_encode[i][0].path, message) for i, message in result.failures]
    return vectors, failures
