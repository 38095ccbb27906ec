"""Exact, multi-caption-aware image-text retrieval metrics, computed in chunks.

The N x M score matrix is never held in memory: queries are taken ``chunk_size`` at
a time, each chunk is scored against the whole other side with one matrix product,
and only per-query counts are kept.  Memory is therefore
``O(chunk_size * max(N, M))`` on top of the embeddings themselves: two float32
blocks of ``chunk_size x max(N, M)`` (with the default 1024 and 150k captions, about
1.2 GB; pass a smaller ``chunk_size`` for bigger sets).  Everything runs on the
embeddings' device, CPU or GPU.

Inputs
------
``image_emb`` (N, D) and ``text_emb`` (M, D) are float tensors or numpy arrays whose
rows the caller has already L2-normalised; a score is a plain dot product.
``text_to_image`` (M,) holds, for every caption, the index of its one gold image.
An image may have any number of captions, including none.

Several gold images per text (MUGE, Chinese-CLIP's layout): pass ``text_to_image`` as
a length-M sequence of index sequences instead, e.g. ``[[0], [1, 4], [2]]`` (a plain
int in that list counts as a one-element set).  Text -> image then finds a text at K
when ANY of its gold images is in the top K, and image -> text finds an image when
ANY text listing it is -- the rule of Chinese-CLIP's ``evaluation.py`` and
``evaluation_tr.py``, so recall is comparable with its published numbers.  A text
with an empty set has no text -> image rank (``-1``, left out of that recall) and
an image listed by no text has no image -> text rank, as below.  With one index per
text this form gives exactly the ranks of the plain (M,) form.

Ranking rule
------------
Candidates are ordered by descending score; equal scores are ordered by lower
candidate index first -- the order a *stable* descending sort gives.  Ranks are
0-based positions in that order.

* text -> image: the rank of a caption is the position of its gold image
  ``g`` among all N images::

      #(images with score > s_g) + #(images with score == s_g and index < g)

* image -> text: an image is found at K as soon as ANY of its captions is in the
  top K, so its rank is the position of its *first* gold caption in the stable
  order (with several gold images per text, text -> image ranks follow the same
  rule over the text's gold images).  With ``g_max`` the highest score over its
  captions and ``c*`` the lowest caption index reaching ``g_max``::

      #(texts with score > g_max) + #(texts with score == g_max and index < c*)

  Images without any caption have no image -> text rank (reported as ``-1``) and are
  left out of image -> text recall; ``num_images`` still counts them.

``Recall@K`` is the percentage (0-100) of queries whose rank is ``< K``.  Median
ranks are reported 1-based, as in the literature (``floor(median(rank)) + 1``).

Numerics
--------
Scores are computed in float32: float16 / bfloat16 (and float64) query chunks are
cast to float32 one chunk at a time, and the candidate side is cast once (a float32
copy of one side exists while it serves as candidates, unless it already is
contiguous float32).  Ranks are exact with respect to the scores the matrix product
returns, including ties.  Different chunk sizes use different matrix-product shapes,
and a BLAS library is free to round a sum of ``D`` products differently for different
shapes; that can only reorder scores that agree to the last bit or so, never anything
a model actually separates.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:  # pragma: no cover - only for type checkers
    from rich.table import Table

__all__ = [
    "format_recall_table",
    "recall_at_k",
    "retrieval_metrics",
    "retrieval_ranks",
]

DEFAULT_KS: tuple[int, ...] = (1, 5, 10)

# A float32 sum of 0/1 values is exact while every partial sum stays below 2**24.
_EXACT_FLOAT32_COUNT = 1 << 24


# --------------------------------------------------------------------------- inputs


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    """Wrap ``x`` (tensor, numpy array or nested sequence) as a tensor, without copying when possible."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(f"{name} must be a numeric array, got a numpy object array")
        return torch.from_numpy(np.ascontiguousarray(x))
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise ValueError(f"{name} must be a tensor or numpy array: {exc}") from None


def _check_embeddings(x: Any, name: str) -> torch.Tensor:
    t = _as_tensor(x, name)
    if t.ndim != 2:
        raise ValueError(f"{name} must be 2-D (num_items, dim), got shape {tuple(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating-point array, got dtype {t.dtype}")
    if t.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(t.shape)}); nothing to retrieve")
    if t.shape[1] == 0:
        raise ValueError(f"{name} has zero-dimensional embeddings (shape {tuple(t.shape)})")
    low, high = torch.aminmax(t)  # NaN propagates; one pass, no temporary
    if not bool(torch.isfinite(low) & torch.isfinite(high)):
        raise ValueError(f"{name} contains NaN or infinite values")
    return t


def _is_gold_sets(x: Any) -> bool:
    """True for the multi-gold form: a sequence whose items include index sequences."""
    if isinstance(x, np.ndarray):
        return x.dtype == object
    if not isinstance(x, (list, tuple)):
        return False
    for item in x:
        if isinstance(item, (list, tuple, set, frozenset, range)):
            return True
        if isinstance(item, (np.ndarray, torch.Tensor)) and item.ndim > 0:
            return True
    return False


def _set_members(item: Any, q: int) -> list[int]:
    """The gold indices of text `q` in the multi-gold form, as Python ints."""
    if isinstance(item, (bool, np.bool_)):
        raise ValueError(f"text_to_image[{q}] must be an image index or a sequence of them, got a bool")
    if isinstance(item, (int, np.integer)):
        return [int(item)]
    if isinstance(item, (torch.Tensor, np.ndarray)):
        kind = str(item.dtype)
        if item.ndim > 1 or "bool" in kind or "float" in kind or "complex" in kind or kind == "object":
            raise ValueError(f"text_to_image[{q}] must be a 1-D sequence of integer indices, got {kind} of shape {tuple(item.shape)}")
        return [int(v) for v in item.reshape(-1).tolist()]
    if isinstance(item, (list, tuple, set, frozenset, range)):
        out = []
        for v in item:
            if isinstance(v, (bool, np.bool_)) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"text_to_image[{q}] must hold integer image indices, found {v!r}")
            out.append(int(v))
        return sorted(set(out)) if isinstance(item, (set, frozenset)) else out
    raise ValueError(f"text_to_image[{q}] must be an image index or a sequence of them, got {type(item).__name__}")


class _GoldSets:
    """Many-to-many gold pairs as two CSR tables (queries -> sorted candidate indices):
    ``t_offsets``/``t_members`` text -> images, ``i_offsets``/``i_members`` image -> texts."""

    def __init__(self, sets: Any, num_texts: int, num_images: int, device: torch.device) -> None:
        items = list(sets)
        if len(items) != num_texts:
            raise ValueError(
                f"text_to_image must be 1-D (one gold image index per text) or hold one set of gold "
                f"image indices per text; got {len(items)} sets for the {num_texts} rows of text_emb"
            )
        pairs: set[tuple[int, int]] = set()
        for q, item in enumerate(items):
            for c in _set_members(item, q):
                if not 0 <= c < num_images:
                    raise ValueError(
                        f"text_to_image[{q}] holds image index {c}, outside [0, {num_images}) for {num_images} images"
                    )
                pairs.add((q, c))
        if not pairs:
            raise ValueError("no text has a gold image, so retrieval recall is undefined")
        by_text = torch.tensor(sorted(pairs), dtype=torch.long)
        by_image = torch.tensor(sorted((c, q) for q, c in pairs), dtype=torch.long)
        self.t_offsets, self.t_members = _csr(by_text, num_texts, device)
        self.i_offsets, self.i_members = _csr(by_image, num_images, device)


def _csr(pairs: torch.Tensor, num_rows: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """(offsets (num_rows + 1,), members) of (row, member) pairs sorted by row, then member."""
    counts = torch.bincount(pairs[:, 0], minlength=num_rows)
    offsets = torch.zeros(num_rows + 1, dtype=torch.long)
    torch.cumsum(counts, 0, out=offsets[1:])
    return offsets.to(device), pairs[:, 1].contiguous().to(device)


def _check_inputs(
    image_emb: Any, text_emb: Any, text_to_image: Any, chunk_size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | _GoldSets]:
    images = _check_embeddings(image_emb, "image_emb")
    texts = _check_embeddings(text_emb, "text_emb")
    if images.shape[1] != texts.shape[1]:
        raise ValueError(
            f"image_emb and text_emb have different embedding sizes: "
            f"{images.shape[1]} vs {texts.shape[1]}"
        )
    if images.device != texts.device:
        raise ValueError(f"image_emb is on {images.device} but text_emb is on {texts.device}")
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, (int, np.integer)) or chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size!r}")
    if _is_gold_sets(text_to_image):
        return images, texts, _GoldSets(text_to_image, texts.shape[0], images.shape[0], images.device)

    gold = _as_tensor(text_to_image, "text_to_image")
    if gold.ndim != 1:
        raise ValueError(f"text_to_image must be 1-D (num_texts,), got shape {tuple(gold.shape)}")
    if gold.dtype == torch.bool or gold.is_floating_point() or gold.is_complex():
        raise ValueError(f"text_to_image must hold integer image indices, got dtype {gold.dtype}")
    num_images, num_texts = images.shape[0], texts.shape[0]
    if gold.shape[0] != num_texts:
        raise ValueError(
            f"text_to_image has {gold.shape[0]} entries but text_emb has {num_texts} rows; "
            "it needs one gold image index per caption"
        )
    gold = gold.to(device=images.device, dtype=torch.long)
    lo, hi = int(gold.min()), int(gold.max())
    if lo < 0 or hi >= num_images:
        bad = lo if lo < 0 else hi
        raise ValueError(
            f"text_to_image holds image index {bad}, outside [0, {num_images}) "
            f"for {num_images} images"
        )
    return images, texts, gold


def _float32_candidates(x: torch.Tensor) -> torch.Tensor:
    """The candidate side as contiguous float32 (no copy when it already is)."""
    return x.to(torch.float32).contiguous()


# --------------------------------------------------------------------------- core


class _Scorer:
    """Scores query chunks against a fixed candidate set and counts gold ranks.

    A chunk's scores are held transposed, as a (num_candidates, rows) block: with a
    short query side, ``candidates @ queries.T`` runs faster than the other
    orientation in CPU BLAS, and the per-query counts become column sums.

    Per block: ``equal = (score == gold)`` into a second block and ``score > gold``
    in place, both as float 0/1, then both column sums in one product with a row of
    ones (BLAS reads each block once; summing bool masks is several times slower in
    torch).  The sums are exact in float32 below 2**24 candidates (float64 beyond).
    Only columns with more than one equal score -- rare for real embeddings, common
    with duplicates -- are recounted with the index rule.
    """

    def __init__(self, candidates: torch.Tensor, chunk_size: int, num_queries: int) -> None:
        self.candidates = _float32_candidates(candidates)
        self.n = n = self.candidates.shape[0]
        device = candidates.device
        self._buf = torch.empty(2 * n * min(chunk_size, num_queries), dtype=torch.float32, device=device)
        self._exact_in_float32 = n < _EXACT_FLOAT32_COUNT
        self._ones = torch.ones(1, n, dtype=torch.float32, device=device)

    def _blocks(self, rows: int) -> torch.Tensor:
        """(2, n, rows) view of the scratch buffer: scores, then the ``equal`` block."""
        return self._buf[: 2 * self.n * rows].view(2, self.n, rows)

    def scores(self, queries: torch.Tensor) -> torch.Tensor:
        """The (num_candidates, rows) score block of a query chunk (a view of the scratch buffer)."""
        block = self._blocks(queries.shape[0])[0]
        torch.mm(self.candidates, queries.to(torch.float32).T, out=block)
        return block

    def ranks(self, scores: torch.Tensor, gold_score: torch.Tensor, gold_index: torch.Tensor) -> torch.Tensor:
        """0-based stable ranks, ``#(score > gold) + #(score == gold and index < gold_index)``.

        ``scores`` is the block :meth:`scores` just returned; it is overwritten.  A
        gold score of +inf (no gold at all) yields 0.
        """
        blocks = self._blocks(scores.shape[1])
        gold = gold_score.unsqueeze(0)
        torch.eq(scores, gold, out=blocks[1])  # 1.0 where score == gold, the gold itself included
        scores.gt_(gold)  # in place: 1.0 where score > gold
        counts = self._column_sums(blocks)  # (2, rows): #greater, #equal
        ranks = counts[0]
        tied = torch.nonzero(counts[1] > 1).squeeze(1)
        if tied.numel():
            equal = blocks[1][:, tied]
            after_gold = torch.arange(self.n, device=scores.device).unsqueeze(1) >= gold_index[tied]
            ranks.index_add_(0, tied, self._column_sums(equal.masked_fill_(after_gold, 0.0)))
        return ranks.to(torch.long)

    def _column_sums(self, x: torch.Tensor) -> torch.Tensor:
        """Exact column sums of a 0/1 block (n, k), or of a stack of them (b, n, k)."""
        if self._exact_in_float32:
            return torch.matmul(self._ones, x).squeeze(-2)
        return x.sum(-2, dtype=torch.float64)


def _caption_index(text_to_image: torch.Tensor, num_images: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Captions grouped by image (ascending caption index within an image) and CSR offsets."""
    order = torch.argsort(text_to_image, stable=True)
    counts = torch.bincount(text_to_image, minlength=num_images)
    offsets = torch.zeros(num_images + 1, dtype=torch.long, device=text_to_image.device)
    torch.cumsum(counts, 0, out=offsets[1:])
    return order, offsets


def _text_to_image_ranks(
    images: torch.Tensor, texts: torch.Tensor, gold: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    num_texts = texts.shape[0]
    scorer = _Scorer(images, chunk_size, num_texts)
    ranks = torch.empty(num_texts, dtype=torch.long, device=images.device)
    for start in range(0, num_texts, chunk_size):
        stop = min(start + chunk_size, num_texts)
        scores = scorer.scores(texts[start:stop])
        gold_index = gold[start:stop]
        gold_score = scores.gather(0, gold_index.unsqueeze(0)).squeeze(0)
        ranks[start:stop] = scorer.ranks(scores, gold_score, gold_index)
    return ranks


def _image_to_text_ranks(
    images: torch.Tensor, texts: torch.Tensor, gold: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    num_images = images.shape[0]
    order, offsets = _caption_index(gold, num_images)
    if not bool((offsets[1:] > offsets[:-1]).any()):
        raise ValueError("no image has a caption, so image->text recall is undefined")
    return _set_ranks(images, texts, offsets, order, chunk_size)


def _set_ranks(
    queries: torch.Tensor, candidates: torch.Tensor, offsets: torch.Tensor, members: torch.Tensor, chunk_size: int
) -> torch.Tensor:
    """Rank of every query's first gold candidate; query q's golds are
    ``members[offsets[q]:offsets[q + 1]]`` (ascending within a query).  A query without
    golds gets ``-1``."""
    num_queries, num_candidates = queries.shape[0], candidates.shape[0]
    device = queries.device
    has_gold = offsets[1:] > offsets[:-1]
    counts = offsets[1:] - offsets[:-1]
    scorer = _Scorer(candidates, chunk_size, num_queries)
    ranks = torch.empty(num_queries, dtype=torch.long, device=device)
    offsets_cpu = offsets.tolist()
    for start in range(0, num_queries, chunk_size):
        stop = min(start + chunk_size, num_queries)
        n_rows = stop - start
        scores = scorer.scores(queries[start:stop])

        # The golds of this chunk's queries are one contiguous run of `members`.
        golds = members[offsets_cpu[start] : offsets_cpu[stop]]
        row_of = torch.repeat_interleave(torch.arange(n_rows, device=device), counts[start:stop])
        values = scores[golds, row_of]
        best = torch.full((n_rows,), float("-inf"), device=device)
        best.scatter_reduce_(0, row_of, values, reduce="amax", include_self=True)
        reaches_best = values == best[row_of]
        first = torch.full((n_rows,), num_candidates, dtype=torch.long, device=device)
        first.scatter_reduce_(
            0, row_of[reaches_best], golds[reaches_best], reduce="amin", include_self=True
        )

        with_gold = has_gold[start:stop]
        # A query without golds gets a gold score no candidate reaches; its
        # (meaningless) count is replaced by -1 below.
        gold_score = torch.where(with_gold, best, torch.full_like(best, float("inf")))
        gold_index = torch.where(with_gold, first, torch.zeros_like(first))
        chunk_ranks = scorer.ranks(scores, gold_score, gold_index)
        ranks[start:stop] = torch.where(with_gold, chunk_ranks, torch.full_like(chunk_ranks, -1))
    return ranks


def retrieval_ranks(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any,
    chunk_size: int = 1024,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact 0-based retrieval ranks in both directions, computed chunk by chunk.

    Args:
        image_emb: (N, D) image embeddings (tensor or numpy), L2-normalised.
        text_emb: (M, D) caption embeddings, L2-normalised, on the same device.
        text_to_image: (M,) integer gold image index of every caption, or a length-M
            sequence of gold index sequences (several gold images per text; see the
            module docstring).
        chunk_size: queries scored per matrix product.  The two scratch buffers hold
            ``2 * chunk_size * max(N, M)`` float32 values; lower it for very large
            candidate sets.

    Returns:
        ``(text_to_image_ranks, image_to_text_ranks)``: int64 tensors of shape (M,) and
        (N,) on the embeddings' device.  Ties follow the module's stable ranking rule;
        images without captions (and, in the multi-gold form, texts with an empty set)
        get ``-1``.

    Raises:
        ValueError: on empty inputs, non-float or non-finite embeddings, mismatched
            embedding sizes, a ``text_to_image`` of the wrong length or with an index
            outside ``[0, N)``, or a non-positive ``chunk_size``.
    """
    images, texts, gold = _check_inputs(image_emb, text_emb, text_to_image, chunk_size)
    chunk_size = int(chunk_size)
    with torch.no_grad():
        if isinstance(gold, _GoldSets):
            t2i = _set_ranks(texts, images, gold.t_offsets, gold.t_members, chunk_size)
            i2t = _set_ranks(images, texts, gold.i_offsets, gold.i_members, chunk_size)
        else:
            t2i = _text_to_image_ranks(images, texts, gold, chunk_size)
            i2t = _image_to_text_ranks(images, texts, gold, chunk_size)
    return t2i, i2t


# --------------------------------------------------------------------------- metrics


def _check_ks(ks: Iterable[int]) -> tuple[int, ...]:
    out = []
    for k in ks:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"recall cut-offs must be positive integers, got {k!r}")
        out.append(int(k))
    if not out:
        raise ValueError("no recall cut-offs given (ks is empty)")
    return tuple(dict.fromkeys(out))  # drop repeats, keep order


def _valid_ranks(ranks: Any) -> torch.Tensor:
    r = _as_tensor(ranks, "ranks")
    if r.ndim != 1:
        raise ValueError(f"ranks must be 1-D, got shape {tuple(r.shape)}")
    if r.dtype == torch.bool or r.is_floating_point() or r.is_complex():
        raise ValueError(f"ranks must be integers, got dtype {r.dtype}")
    r = r.to(torch.long)
    if r.numel() and int(r.min()) < -1:
        raise ValueError(f"ranks must be >= 0 (or -1 for 'no gold'), found {int(r.min())}")
    valid = r[r >= 0]
    if valid.numel() == 0:
        raise ValueError("no valid ranks to compute recall from (all are -1 or ranks is empty)")
    return valid


def recall_at_k(ranks: Any, ks: Sequence[int] = DEFAULT_KS) -> dict[int, float]:
    """Recall@K in percent (0-100) for each K: the share of ranks ``< K``; ``-1`` entries are ignored."""
    cutoffs = _check_ks(ks)
    valid = _valid_ranks(ranks)
    total = valid.numel()
    return {k: 100.0 * int((valid < k).sum()) / total for k in cutoffs}


def _median_rank(ranks: torch.Tensor) -> float:
    """1-based median rank as the retrieval literature reports it: floor(median) + 1."""
    valid = _valid_ranks(ranks).cpu().numpy()
    return float(np.floor(np.median(valid)) + 1)


def retrieval_metrics(
    image_emb: Any,
    text_emb: Any,
    text_to_image: Any,
    ks: Sequence[int] = DEFAULT_KS,
    chunk_size: int = 1024,
) -> dict[str, float | int]:
    """Recall@K both ways, their mean, median ranks and sizes, as one flat dict.

    Keys: ``i2t_r{k}`` and ``t2i_r{k}`` for every ``k`` in ``ks`` (percent),
    ``mean_recall`` (mean of those ``2 * len(ks)`` values), ``i2t_median_rank`` and
    ``t2i_median_rank`` (1-based), ``num_images`` (N, captionless images included)
    and ``num_texts`` (M).  See the module docstring for the ranking rule.
    """
    cutoffs = _check_ks(ks)
    t2i_ranks, i2t_ranks = retrieval_ranks(image_emb, text_emb, text_to_image, chunk_size=chunk_size)
    i2t = recall_at_k(i2t_ranks, cutoffs)
    t2i = recall_at_k(t2i_ranks, cutoffs)
    metrics: dict[str, float | int] = {}
    for k in cutoffs:
        metrics[f"i2t_r{k}"] = i2t[k]
    for k in cutoffs:
        metrics[f"t2i_r{k}"] = t2i[k]
    recalls = [*i2t.values(), *t2i.values()]
    metrics["mean_recall"] = sum(recalls) / len(recalls)
    metrics["i2t_median_rank"] = _median_rank(i2t_ranks)
    metrics["t2i_median_rank"] = _median_rank(t2i_ranks)
    metrics["num_images"] = int(i2t_ranks.shape[0])
    metrics["num_texts"] = int(t2i_ranks.shape[0])
    return metrics


def format_recall_table(metrics: dict[str, Any]) -> Table:
    """A rich table of a :func:`retrieval_metrics` result.

    Rows: text->image and image->text; columns: R@K for every K present in both
    directions, the row's mean recall, and the median rank when present.  The caption
    gives the overall mean recall and the sizes.
    """
    from rich.table import Table

    pattern = re.compile(r"^(i2t|t2i)_r(\d+)$")
    found: dict[str, set[int]] = {"i2t": set(), "t2i": set()}
    for key in metrics:
        m = pattern.match(key)
        if m:
            found[m.group(1)].add(int(m.group(2)))
    ks = sorted(found["i2t"] & found["t2i"])
    if not ks:
        raise ValueError("metrics hold no recall values (expected keys like 't2i_r1' and 'i2t_r1')")

    with_median = "t2i_median_rank" in metrics and "i2t_median_rank" in metrics
    parts = []
    if "mean_recall" in metrics:
        parts.append(f"mean recall {float(metrics['mean_recall']):.2f}")
    if "num_images" in metrics and "num_texts" in metrics:
        parts.append(f"{metrics['num_images']} images, {metrics['num_texts']} texts")
    table = Table(title="Image-text retrieval (recall, %)", caption="; ".join(parts) or None)
    table.add_column("direction")
    for k in ks:
        table.add_column(f"R@{k}", justify="right")
    table.add_column("mean", justify="right")
    if with_median:
        table.add_column("MedR", justify="right")
    for label, prefix in (("text->image", "t2i"), ("image->text", "i2t")):
        values = [float(metrics[f"{prefix}_r{k}"]) for k in ks]
        cells = [label, *(f"{v:.2f}" for v in values), f"{sum(values) / len(values):.2f}"]
        if with_median:
            cells.append(f"{float(metrics[f'{prefix}_median_rank']):g}")
        table.add_row(*cells)
    return table
