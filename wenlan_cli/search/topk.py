"""Exact top-k search over unit vectors, in chunks of the candidate set.

A score is a dot product (cosine similarity for L2-normalised rows). The candidates
are scored ``chunk_size`` rows at a time with one matrix product per chunk; each
chunk's best ``k`` are merged into a running best ``k``, so memory stays at
``num_queries x chunk_size`` scores on top of the vectors themselves.

Ranking rule: descending score, and among equal scores the lower candidate index
first -- the order a stable descending sort of each query's full score row gives.
`torch.topk` alone does not promise which of several tied candidates it keeps, so a
chunk whose k-th score is tied with a candidate that topk left out is re-selected by
the rule, and every merge orders by (score descending, index ascending).
Scores are exact float32 matrix-product results; as with any BLAS, different chunk
sizes may round a score differently in its last bit.

`search_faiss` gives the same results through faiss' `IndexFlatIP` (also exact) when
faiss is installed; faiss does not promise an order among tied scores.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..errors import UsageError

__all__ = ["DEFAULT_CHUNK_SIZE", "require_faiss", "search_faiss", "search_vectors"]

DEFAULT_CHUNK_SIZE = 65536


def _as_float_tensor(x: Any, name: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else torch.as_tensor(x)
    if t.ndim == 1:
        t = t.unsqueeze(0)
    if t.ndim != 2 or not t.is_floating_point():
        raise ValueError(f"{name} must be a 2-D float array, got shape {tuple(t.shape)} and dtype {t.dtype}")
    return t


def _order(values: torch.Tensor, indices: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `k` of each row by (value descending, index ascending)."""
    by_index = torch.sort(indices, dim=1, stable=True)
    values = values.gather(1, by_index.indices)
    by_value = torch.sort(values, dim=1, descending=True, stable=True)
    keep = by_value.indices[:, :k]
    return by_value.values[:, :k], by_index.values.gather(1, keep)


def _chunk_topk(scores: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The best `k` positions of each row of a (Q, c) score block, ties to lower positions."""
    values, positions = torch.topk(scores, k, dim=1, largest=True, sorted=True)
    kth = values[:, -1:]
    tied_in_block = (scores == kth).sum(1)
    tied_kept = (values == kth).sum(1)
    for row in torch.nonzero(tied_in_block > tied_kept).flatten().tolist():
        # topk kept some, not all, of the candidates tied at the k-th score: keep the
        # lowest-indexed ones, as a stable sort would.
        line, cut = scores[row], kth[row]
        above = torch.nonzero(line > cut).flatten()
        tied = torch.nonzero(line == cut).flatten()[: k - above.numel()]
        chosen = torch.cat([above, tied])
        values[row] = line[chosen]
        positions[row] = chosen
    return values, positions


@torch.no_grad()
def search_vectors(
    queries: Any,
    vectors: Any,
    k: int = 10,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact top-k by dot product.

    Args:
        queries: (Q, D) or (D,) query vectors (tensor or numpy), L2-normalised.
        vectors: (N, D) candidate vectors on the same device, L2-normalised.
        k: results per query; fewer (N) when the candidate set is smaller.
        chunk_size: candidate rows scored per matrix product.

    Returns:
        ``(scores, indices)``: float32 (Q, min(k, N)) and int64 (Q, min(k, N)), best
        first, ties broken by the lower candidate index.
    """
    q = _as_float_tensor(queries, "queries").to(torch.float32)
    v = _as_float_tensor(vectors, "vectors")
    if q.shape[1] != v.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions but the vectors have {v.shape[1]}")
    if isinstance(k, bool) or int(k) != k or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be positive, got {chunk_size!r}")
    n, num_queries = v.shape[0], q.shape[0]
    q = q.to(v.device)
    k = min(int(k), n)
    if k == 0 or num_queries == 0:
        return torch.zeros(num_queries, 0, device=v.device), torch.zeros(num_queries, 0, dtype=torch.long, device=v.device)
    best_values = best_indices = None
    for start in range(0, n, chunk_size):
        block = v[start : start + chunk_size].to(torch.float32)
        scores = q @ block.T  # (Q, c)
        values, positions = _chunk_topk(scores, min(k, block.shape[0]))
        positions = positions + start
        if best_values is None:
            best_values, best_indices = values, positions
        else:
            best_values, best_indices = _order(
                torch.cat([best_values, values], 1), torch.cat([best_indices, positions], 1), k
            )
    # A single chunk comes straight from topk: put its ties in index order too.
    return _order(best_values, best_indices, k)


def require_faiss():
    """The faiss module, or a UsageError saying how to get it."""
    try:
        import faiss
    except ImportError:
        raise UsageError(
            "--faiss needs the faiss package, which is not installed (pip install 'wenlan[faiss]' brings faiss-cpu; "
            "faiss-gpu works too); "
            "leave --faiss out to use the built-in exact search."
        ) from None
    return faiss


def search_faiss(queries: Any, vectors: Any, k: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    """The same search through faiss' exact inner-product index (``IndexFlatIP``).

    Raises UsageError when faiss is not installed.
    """
    faiss = require_faiss()
    q = _as_float_tensor(queries, "queries").detach().to("cpu", torch.float32).numpy()
    v = _as_float_tensor(vectors, "vectors").detach().to("cpu", torch.float32).numpy()
    if q.shape[1] != v.shape[1]:
        raise ValueError(f"queries have {q.shape[1]} dimensions but the vectors have {v.shape[1]}")
    k = min(int(k), v.shape[0])
    index = faiss.IndexFlatIP(v.shape[1])
    index.add(np.ascontiguousarray(v))
    scores, indices = index.search(np.ascontiguousarray(q), k)
    return torch.from_numpy(np.asarray(scores, dtype=np.float32)), torch.from_numpy(np.asarray(indices, dtype=np.int64))
