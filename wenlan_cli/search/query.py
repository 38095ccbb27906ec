"""Text and image queries against an image index.

    from wenlan_cli.search import Searcher, load_index
    searcher = Searcher(load_index("photos.index"))
    for result in searcher.search(texts=["红色的汽车"], images=["photo.jpg"], k=5):
        for hit in result.hits:
            print(result.query, hit.rank, f"{hit.score:.3f}", hit.path)

Queries are encoded with the checkpoint the index records (checked against the hash
of its weights), or with another checkpoint of the same embedding size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..errors import CheckpointError, DataError, UsageError
from .index import ImageIndex, checkpoint_identity
from .topk import DEFAULT_CHUNK_SIZE, search_faiss, search_vectors

__all__ = ["Hit", "QueryResult", "Searcher"]


@dataclass
class Hit:
    rank: int  # 1-based
    score: float  # cosine similarity
    row: int  # row of the index
    path: str  # relative to the images folder, as in the manifest
    file: Path  # images folder / path

    def to_json(self) -> dict:
        return {"rank": self.rank, "score": self.score, "row": self.row, "path": self.path, "file": str(self.file)}


@dataclass
class QueryResult:
    query: str  # the text, or the query image's path
    kind: str  # "text" or "image"
    hits: list[Hit]

    def to_json(self) -> dict:
        return {"query": self.query, "kind": self.kind, "results": [hit.to_json() for hit in self.hits]}


class Searcher:
    """Encodes queries with the index's checkpoint and ranks the index's images."""

    def __init__(self, index: ImageIndex, checkpoint: str | Path | None = None, device: str = "cpu") -> None:
        from ..loading import load_checkpoint
        from ..engine.device import pick_device

        self.index = index
        self.warnings: list[str] = []
        recorded = index.checkpoint
        if checkpoint is None:
            path = Path(str(recorded.get("path") or "(none recorded)"))
            if not path.exists():
                raise CheckpointError(
                    f"the checkpoint {path} that built the index {index.directory} no longer exists; "
                    "pass --checkpoint to name where it is now."
                )
            identity = checkpoint_identity(path, known=recorded)
            if identity["model_sha256"] != recorded.get("model_sha256"):
                raise CheckpointError(
                    f"the checkpoint {path} changed since the index {index.directory} was built (its model.safetensors "
                    "hash differs); rebuild the index (wenlan index --rebuild) or pass --checkpoint."
                )
        else:
            identity = checkpoint_identity(checkpoint)
            if identity["embed_dim"] != index.dim:
                raise UsageError(
                    f"--checkpoint {checkpoint} makes {identity['embed_dim']}-d vectors, but the index "
                    f"{index.directory} holds {index.dim}-d ones."
                )
            if identity["model_sha256"] != recorded.get("model_sha256"):
                self.warnings.append(
                    f"--checkpoint {checkpoint} is not the checkpoint that built the index (different weights); "
                    "scores only mean something if the two models share one embedding space."
                )
        self.device = pick_device(device)
        self.loaded = load_checkpoint(identity["path"], device=self.device)
        self._vectors = torch.from_numpy(np.ascontiguousarray(index.vectors, dtype=np.float32)).to(self.device)

    def encode_texts(self, texts: Sequence[str]) -> torch.Tensor:
        from ..encode import encode_texts

        if not texts:
            return torch.zeros(0, self.index.dim)
        empty = [i for i, text in enumerate(texts) if not text.strip()]
        if empty:
            raise UsageError(f"query {empty[0] + 1} is empty; give a text to search for.")
        return encode_texts(self.loaded.model, self.loaded.tokenizer, list(texts), device=self.device,
                            max_length=self.loaded.config.text.max_length)

    def encode_images(self, images: Sequence[str | Path]) -> torch.Tensor:
        from ..data.records import ImageTextRecord
        from ..encode import encode_images

        if not images:
            return torch.zeros(0, self.index.dim)
        records = [ImageTextRecord(image_id=str(p), image_path=Path(p), captions=[]) for p in images]
        result = encode_images(self.loaded.model, records, self.loaded.settings, device=self.device,
                               batch_size=32, workers=0, skip_bad=True)
        if result.failures:
            raise DataError(f"query image {result.failures[0][1]}")
        return result.embeddings

    def search(
        self,
        texts: Sequence[str] = (),
        images: Sequence[str | Path] = (),
        k: int = 10,
        *,
        use_faiss: bool = False,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
    ) -> list[QueryResult]:
        """Results for every text query, then every image query, in the order given."""
        if isinstance(k, bool) or k < 1:
            raise UsageError(f"-k must be at least 1, not {k}.")
        if not texts and not images:
            raise UsageError("give a text query or --image FILE to search for.")
        queries = torch.cat([self.encode_texts(texts), self.encode_images(images)]).to(torch.float32)
        queries = torch.nn.functional.normalize(queries, dim=1)
        if use_faiss:
            scores, rows = search_faiss(queries, self._vectors, k)
        else:
            scores, rows = search_vectors(queries.to(self.device), self._vectors, k, chunk_size=chunk_size)
        labels = [(str(t), "text") for t in texts] + [(str(p), "image") for p in images]
        results = []
        for (query, kind), row_scores, row_ids in zip(labels, scores.cpu().tolist(), rows.cpu().tolist()):
            hits = [
                Hit(rank=r, score=float(s), row=int(i), path=self.index.rows[i].path, file=self.index.file(i))
                for r, (s, i) in enumerate(zip(row_scores, row_ids), start=1)
                if i >= 0
            ]
            results.append(QueryResult(query, kind, hits))
        return results
