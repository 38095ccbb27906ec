#!/usr/bin/env python
"""Query latency of the exact image search (wenlan_cli.search.search_vectors).

Random unit vectors, D = 256, float32, at N = 100k and 1M (1M x 256 = 1 GB). For each
N and a batch of 1 and of 32 queries, top-10:

* ``search_vectors`` (chunked exact top-k, ties to the lower row): median and best
  seconds over ``--repeats`` runs after one warm-up;
* the bare baseline, side by side: one matrix product against all N vectors and one
  ``torch.topk`` over the full score matrix (no chunking, no tie rule), and
  our time / that time;
* faiss ``IndexFlatIP`` (also exact) when faiss is installed.

Both sides are checked to return the same scores. Timings use the threads torch has
(``OMP_NUM_THREADS``; reported as ``threads``); on a shared machine compare the ratios
rather than absolute seconds.

    python benchmarks/search.py                      # N = 100k and 1M
    python benchmarks/search.py --sizes 20000 --repeats 2   # a quick smoke run

Prints progress to stderr and ONE JSON line to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wenlan_cli.search.topk import DEFAULT_CHUNK_SIZE, search_vectors  # noqa: E402

DIM = 256
K = 10


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def unit_vectors(n: int, seed: int, slice_rows: int = 1 << 17) -> torch.Tensor:
    """(n, DIM) float32 unit vectors, generated in slices (no float64 temporary of full size)."""
    out = torch.empty(n, DIM)
    gen = torch.Generator().manual_seed(seed)
    for start in range(0, n, slice_rows):
        block = torch.randn(min(slice_rows, n - start), DIM, generator=gen)
        out[start : start + block.shape[0]] = torch.nn.functional.normalize(block, dim=1)
    return out


def timed(fn, repeats: int) -> tuple[list[float], object]:
    result = fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return times, result


def baseline(queries: torch.Tensor, vectors: torch.Tensor, k: int):
    return torch.topk(queries @ vectors.T, k, dim=1)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--chunk-size", type=int, default=DEFAULT_CHUNK_SIZE)
    parser.add_argument("--no-faiss", action="store_true", help="skip faiss even when installed")
    return parser.parse_args()


def measure_size(vectors: torch.Tensor, queries_all: torch.Tensor, args, faiss) -> list[dict]:
    """One row per query batch size over `vectors`: exact search against the plain
    baseline (and faiss's flat index when given); the faiss index lives only as long as
    this call, so the next size does not hold two copies of the vectors."""
    n = len(vectors)
    index = None
    if faiss is not None:
        index = faiss.IndexFlatIP(DIM)
        index.add(vectors.numpy())
    rows = []
    for batch in args.batches:
        queries = queries_all[:batch]
        ours_t, (ours_scores, _) = timed(lambda: search_vectors(queries, vectors, K, chunk_size=args.chunk_size), args.repeats)
        base_t, (base_scores, _) = timed(lambda: baseline(queries, vectors, K), args.repeats)
        if not torch.allclose(ours_scores, base_scores, atol=1e-5):
            raise SystemExit(f"N={n} batch={batch}: search_vectors and the baseline disagree")
        row = {
            "n": n,
            "batch": batch,
            "exact_s": round(statistics.median(ours_t), 5),
            "exact_best_s": round(min(ours_t), 5),
            "exact_per_query_ms": round(1000 * statistics.median(ours_t) / batch, 3),
            "baseline_s": round(statistics.median(base_t), 5),
            "ratio_vs_baseline": round(statistics.median(ours_t) / statistics.median(base_t), 3),
        }
        if index is not None:
            q = np.ascontiguousarray(queries.numpy())
            faiss_t, (faiss_scores, _) = timed(lambda: index.search(q, K), args.repeats)
            row["faiss_s"] = round(statistics.median(faiss_t), 5)
            row["faiss_agrees"] = bool(np.allclose(faiss_scores, ours_scores.numpy(), atol=1e-4))
        rows.append(row)
        _log(json.dumps(row))
    return rows


def main() -> None:
    args = parse_args()
    try:
        import faiss
    except ImportError:
        faiss = None
    if args.no_faiss:
        faiss = None

    t0 = time.perf_counter()
    everything = unit_vectors(max(args.sizes), seed=0)
    queries_all = unit_vectors(max(args.batches), seed=1)
    _log(f"generated {tuple(everything.shape)} vectors in {time.perf_counter() - t0:.1f}s")

    results = []
    for n in args.sizes:
        results.extend(measure_size(everything[:n], queries_all, args, faiss))

    summary = {
        "benchmark": "search",
        "dim": DIM,
        "k": K,
        "chunk_size": args.chunk_size,
        "threads": torch.get_num_threads(),
        "faiss": faiss is not None,
        "torch": torch.__version__,
        "results": results,
    }
    print(json.dumps(summary))

if __name__ == "__main__":
    main()
