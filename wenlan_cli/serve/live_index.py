"""The served index, swapped atomically when `wenlan index` commits a new generation.

`wenlan index` commits an update by replacing ``index.json`` (see
`wenlan_cli.search.index`), so a change of that file's inode, size or mtime is the one
signal to watch. `LiveIndex.refresh` loads the new generation completely (vectors,
manifest, and the model when the checkpoint changed) beside the current one and then
replaces a single reference under a lock. A request takes the current `Snapshot` once,
when it starts, and uses only that object, so requests in flight during a swap finish
on the old generation and none is dropped; the old one is freed when its last request
ends. A generation that fails to load (a damaged index, a checkpoint that no longer
fits) leaves the current one serving and is reported by `last_error` until the next
change of ``index.json``.
"""

from __future__ import annotations

import hashlib
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..errors import UsageError, WenlanError
from ..loading import LoadedModel
from ..search.index import INDEX_FILE, ImageIndex, load_index

__all__ = ["LiveIndex", "Snapshot", "image_id"]


def image_id(path: str) -> str:
    """A stable id of an indexed image: its manifest path hashed, so it survives
    re-indexing while the file stays where it is, and never is a path itself."""
    return hashlib.sha256(path.encode("utf-8")).hexdigest()[:16]


@dataclass(eq=False)
class Snapshot:
    """One loaded generation of the index and the model that encodes its queries."""

    index: ImageIndex
    vectors: torch.Tensor  # (N, D) float32 on the model's device
    ids: list[str]  # image_id of each row
    by_id: dict[str, int]
    loaded: LoadedModel
    device: torch.device
    generation: str  # the vectors file named by index.json
    stamp: tuple | None  # (inode, size, mtime_ns) of index.json when it was read
    loaded_at: float = field(default_factory=time.time)
    warnings: list[str] = field(default_factory=list)

    @property
    def model_sha256(self) -> str:
        return str(self.index.checkpoint.get("model_sha256") or "")


def _stamp(path: Path) -> tuple | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


class LiveIndex:
    """Holds the current `Snapshot` of the index directory `directory`.

    `checkpoint` encodes queries instead of the checkpoint the index records (same
    embedding size), as `wenlan search --checkpoint` does.
    """

    def __init__(self, directory: str | Path, checkpoint: str | Path | None = None, device: str = "cpu") -> None:
        self.directory = Path(directory)
        self.checkpoint = checkpoint
        self.device = device
        self._lock = threading.Lock()
        self.last_error: str | None = None
        self.reloads = 0
        self._failed_stamp: tuple | None = None
        self._current = self._load(None)

    @property
    def current(self) -> Snapshot:
        return self._current

    def changed(self) -> bool:
        """Whether index.json differs from the one the current snapshot was read from."""
        stamp = _stamp(self.directory / INDEX_FILE)
        return stamp is not None and stamp != self._current.stamp and stamp != self._failed_stamp

    def refresh(self) -> bool:
        """Load and swap in a new generation when index.json changed; True when swapped.
        Never raises for a bad generation: the error is kept in `last_error`."""
        if not self.changed():
            return False
        with self._lock:  # one reload at a time; readers never wait for it
            if not self.changed():
                return False
            stamp = _stamp(self.directory / INDEX_FILE)
            try:
                snapshot = self._load(self._current)
            except WenlanError as exc:
                self.last_error = str(exc)
                self._failed_stamp = stamp
                return False
            self._current = snapshot
            self.last_error = None
            self._failed_stamp = None
            self.reloads += 1
            return True

    def _load(self, previous: Snapshot | None) -> Snapshot:
        stamp = _stamp(self.directory / INDEX_FILE)  # before reading: a later commit is seen next time
        index = load_index(self.directory)
        warnings: list[str] = []
        if previous is not None and (
            self.checkpoint is not None or index.checkpoint.get("model_sha256") == previous.model_sha256
        ):
            loaded, device, warnings = previous.loaded, previous.device, previous.warnings
            if index.dim != int(loaded.config.embed_dim):
                raise UsageError(
                    f"the index {self.directory} now holds {index.dim}-d vectors, but the served model makes "
                    f"{loaded.config.embed_dim}-d ones; restart `wenlan serve`."
                )
        else:
            from ..search.query import Searcher  # checks the checkpoint against the index, loads the model

            searcher = Searcher(index, checkpoint=self.checkpoint, device=self.device)
            loaded, device, warnings = searcher.loaded, searcher.device, list(searcher.warnings)
        vectors = torch.from_numpy(np.ascontiguousarray(index.vectors, dtype=np.float32)).to(device)
        ids = [image_id(row.path) for row in index.rows]
        return Snapshot(
            index=index, vectors=vectors, ids=ids, by_id={value: row for row, value in enumerate(ids)}, loaded=loaded,
            device=device, generation=str(index.info.get("vectors", "")), stamp=stamp, warnings=warnings,
        )
