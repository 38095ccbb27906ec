#!/usr/bin/env python
"""Benchmark the chunked retrieval metrics (wenlan_cli.eval.retrieval) side by side.

Random unit vectors, D = 256, N images with 5 captions each (5N texts).  For every N:

* the chunked exact ranks (``retrieval_ranks``, both directions): seconds and peak RSS;
* the bare matrix products with the same chunking and orientation (just ``torch.mm``
  into the same kind of buffer, both directions): seconds, and our time / that time;
* at N = 10k (``--argsort-at``) also the original-BriVL-style evaluation: the full
  N x 5N score matrix, then a full stable descending sort of every row (torch.sort,
  batched over rows so its index output fits in memory), ranks read off the sorted
  order; checked for identical ranks, and the speedup reported.

Each measurement runs in a fresh child process (``subprocess``) so that its peak RSS
(``resource.getrusage``'s ``ru_maxrss``) is that size's own.  The RSS includes the
interpreter, torch (~0.5 GB for a CUDA build) and the embeddings themselves
(N x 256 + 5N x 256 float32); ``data_rss_mb`` is what the child held before ranking.

Targets reported against: >= 10x faster than the full-matrix sort at 10k; 100k x 500k
under 2 GB peak RSS; time within 1.5x of the bare matrix products.  On a shared machine
absolute seconds are noisy; the ratios are measured back to back in one child, in
wall-clock seconds and in CPU seconds (the latter is much less disturbed by other load).

    python benchmarks/retrieval.py                   # N = 10k, 50k, 100k
    python benchmarks/retrieval.py --sizes 10000     # just one size
    python benchmarks/retrieval.py --sizes 2000 --argsort-at 2000   # a quick smoke run

Prints progress to stderr and ONE JSON line to stdout at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

DIM = 256
CAPTIONS_PER_IMAGE = 5
# Two float32 scratch blocks of chunk x max(N, M) each; keep both within 512 MiB.
BLOCK_ELEMENTS = 1 << 26


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        return os.cpu_count() or 1


def auto_chunk_size(n_images: int, captions_per_image: int = CAPTIONS_PER_IMAGE) -> int:
    """Largest power of two <= 1024 whose score blocks fit ``BLOCK_ELEMENTS``."""
    widest = n_images * max(1, captions_per_image)
    chunk = 1024
    while chunk > 16 and chunk * widest > BLOCK_ELEMENTS:
        chunk //= 2
    return chunk


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- child side


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def make_data(n_images: int, captions_per_image: int, seed: int):
    """Random unit vectors, generated in slices so no full-size temporary exists."""
    import torch

    g = torch.Generator().manual_seed(seed)

    def unit_rows(n: int) -> torch.Tensor:
        out = torch.empty(n, DIM)
        for s in range(0, n, 65536):
            block = out[s : s + 65536]
            block.normal_(generator=g)
            block.div_(block.norm(dim=1, keepdim=True))
        return out

    images = unit_rows(n_images)
    texts = unit_rows(n_images * captions_per_image)
    text_to_image = torch.arange(n_images).repeat_interleave(captions_per_image)
    return images, texts, text_to_image


def bare_matmul(images, texts, chunk_size: int) -> None:
    """Just the matrix products of retrieval_ranks: same chunks, same orientation, same buffers."""
    import torch

    for candidates, queries in ((images, texts), (texts, images)):
        n, q = candidates.shape[0], queries.shape[0]
        flat = torch.empty(n * min(chunk_size, q))
        for start in range(0, q, chunk_size):
            rows = min(chunk_size, q - start)
            torch.mm(candidates, queries[start : start + rows].T, out=flat[: n * rows].view(n, rows))


def full_matrix_ranks(images, texts, text_to_image, batch_rows: int = 256):
    """Original-BriVL-style evaluation: the whole score matrix, every row fully sorted.

    A stable descending sort, so ties fall to the lower index exactly as in the
    chunked code.  Rows are sorted in batches only to bound the sort's index output;
    the full N x M score matrix is materialised.
    """
    import torch

    n = images.shape[0]
    scores = images @ texts.T  # (N, M): the full matrix
    # image -> text: first position of any of the image's captions in its sorted row
    i2t = torch.empty(n, dtype=torch.long)
    for s in range(0, n, batch_rows):
        order = torch.sort(scores[s : s + batch_rows], dim=1, descending=True, stable=True).indices
        is_gold = text_to_image[order] == torch.arange(s, s + order.shape[0]).unsqueeze(1)
        i2t[s : s + order.shape[0]] = torch.where(is_gold.any(1), is_gold.byte().argmax(1), -1)
    # text -> image: position of the gold image in each caption's sorted column
    scores_t = scores.T
    m = texts.shape[0]
    t2i = torch.empty(m, dtype=torch.long)
    for s in range(0, m, batch_rows):
        rows = scores_t[s : s + batch_rows].contiguous()
        order = torch.sort(rows, dim=1, descending=True, stable=True).indices
        is_gold = order == text_to_image[s : s + batch_rows].unsqueeze(1)
        t2i[s : s + order.shape[0]] = is_gold.byte().argmax(1)
    return t2i, i2t


def time_chunked(images, texts, gold, args: argparse.Namespace) -> dict:
    """`retrieval_ranks` against the bare products it is built on, interleaved so both
    see the same load. CPU seconds (all threads) are reported too: on a shared machine
    they are far less disturbed by other processes than wall-clock seconds."""
    from wenlan_cli.eval.retrieval import recall_at_k, retrieval_ranks

    ours, mm, ours_cpu, mm_cpu = [], [], [], []
    for _ in range(args.repeats):
        t, c = time.perf_counter(), time.process_time()
        bare_matmul(images, texts, args.chunk_size)
        mm.append(time.perf_counter() - t)
        mm_cpu.append(time.process_time() - c)
        t, c = time.perf_counter(), time.process_time()
        t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=args.chunk_size)
        ours.append(time.perf_counter() - t)
        ours_cpu.append(time.process_time() - c)
    return dict(
        seconds=round(min(ours), 3),
        matmul_seconds=round(min(mm), 3),
        ratio_vs_matmul=round(min(ours) / min(mm), 3),
        cpu_seconds=round(min(ours_cpu), 3),
        matmul_cpu_seconds=round(min(mm_cpu), 3),
        ratio_vs_matmul_cpu=round(min(ours_cpu) / min(mm_cpu), 3),
        all_seconds=[round(x, 3) for x in ours],
        all_matmul_seconds=[round(x, 3) for x in mm],
        t2i_r10=round(recall_at_k(t2i, (10,))[10], 4),
        i2t_r10=round(recall_at_k(i2t, (10,))[10], 4),
    )


def compare_argsort(images, texts, gold, args: argparse.Namespace) -> dict:
    """The full-matrix approach, with ours next to it for the speedup and a check that
    both give the same ranks."""
    from wenlan_cli.eval.retrieval import retrieval_ranks

    t = time.perf_counter()
    t2i, i2t = retrieval_ranks(images, texts, gold, chunk_size=args.chunk_size)
    chunked_s = time.perf_counter() - t
    t = time.perf_counter()
    ref_t2i, ref_i2t = full_matrix_ranks(images, texts, gold)
    full_s = time.perf_counter() - t
    mismatches = int((t2i != ref_t2i).sum()) + int((i2t != ref_i2t).sum())
    return dict(
        chunked_seconds=round(chunked_s, 3),
        argsort_seconds=round(full_s, 3),
        speedup=round(full_s / chunked_s, 2),
        identical_ranks=mismatches == 0,
        mismatches=mismatches,
    )


def child(args: argparse.Namespace) -> dict:
    import torch

    torch.set_num_threads(args.threads)
    from wenlan_cli.eval.retrieval import retrieval_ranks

    images, texts, gold = make_data(args.n, args.captions_per_image, args.seed)
    # Warm up BLAS and the thread pool on a slice, so no timing pays for the first call.
    few = min(args.n, 512)
    few_texts = few * args.captions_per_image
    retrieval_ranks(images[:few], texts[:few_texts], gold[:few_texts], chunk_size=args.chunk_size)
    bare_matmul(images[:few], texts[:few_texts], args.chunk_size)
    out: dict = {
        "n_images": args.n,
        "n_texts": texts.shape[0],
        "chunk_size": args.chunk_size,
        "data_rss_mb": round(_rss_mb(), 1),
    }
    if args.child == "chunked":
        out.update(time_chunked(images, texts, gold, args))
    else:  # "argsort"
        out.update(compare_argsort(images, texts, gold, args))
    out["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return out


# --------------------------------------------------------------------------- parent side


def run_child(mode: str, n: int, chunk_size: int, args: argparse.Namespace) -> dict:
    cmd = [
        sys.executable, os.path.abspath(__file__), "--child", mode, "--n", str(n),
        "--chunk-size", str(chunk_size), "--threads", str(args.threads),
        "--captions-per-image", str(args.captions_per_image), "--seed", str(args.seed),
        "--repeats", str(args.repeats if args.repeats else (3 if n <= 10_000 else 1)),
    ]  # fmt: skip
    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env["PYTHONPATH"] = root + os.pathsep + env.get("PYTHONPATH", "")
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        raise SystemExit(f"benchmark child {mode} N={n} failed:\n{proc.stderr[-4000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def measure_sizes(args: argparse.Namespace) -> tuple[list[dict], dict | None]:
    """One child per size (a fresh process, so peak RSS is that size's), and the
    full-matrix comparison at --argsort-at."""
    results, argsort = [], None
    for n in args.sizes:
        chunk = args.chunk_size or auto_chunk_size(n, args.captions_per_image)
        _log(f"N={n} x {n * args.captions_per_image} texts, chunk {chunk}, {args.threads} threads ...")
        r = run_child("chunked", n, chunk, args)
        _log(
            f"  chunked {r['seconds']:.2f}s, bare matmul {r['matmul_seconds']:.2f}s "
            f"(x{r['ratio_vs_matmul']:.2f}; CPU-time x{r['ratio_vs_matmul_cpu']:.2f}), "
            f"peak RSS {r['peak_rss_mb']:.0f} MB (data {r['data_rss_mb']:.0f} MB)"
        )
        results.append(r)
        if n == args.argsort_at:
            argsort = run_child("argsort", n, chunk, args)
            _log(
                f"  full matrix + sort {argsort['argsort_seconds']:.2f}s vs chunked "
                f"{argsort['chunked_seconds']:.2f}s: x{argsort['speedup']:.1f}, "
                f"identical ranks: {argsort['identical_ranks']}, peak RSS {argsort['peak_rss_mb']:.0f} MB"
            )
    return results, argsort


def summarize(args: argparse.Namespace, results: list[dict], argsort: dict | None) -> dict:
    summary: dict = {
        "benchmark": "retrieval",
        "dim": DIM,
        "captions_per_image": args.captions_per_image,
        "threads": args.threads,
        "results": results,
        "ratio_vs_matmul": {str(r["n_images"]): r["ratio_vs_matmul"] for r in results},
        "ratio_vs_matmul_cpu": {str(r["n_images"]): r["ratio_vs_matmul_cpu"] for r in results},
        "peak_rss_mb": {str(r["n_images"]): r["peak_rss_mb"] for r in results},
        "seconds": {str(r["n_images"]): r["seconds"] for r in results},
    }
    targets: dict = {
        "ratio_vs_matmul_le_1.5": all(r["ratio_vs_matmul"] <= 1.5 for r in results),
        "ratio_vs_matmul_cpu_le_1.5": all(r["ratio_vs_matmul_cpu"] <= 1.5 for r in results),
    }
    if argsort is not None:
        summary["argsort"] = argsort
        summary[f"speedup_vs_argsort_{argsort['n_images'] // 1000}k"] = argsort["speedup"]
        summary["identical_ranks"] = argsort["identical_ranks"]
        targets["speedup_vs_argsort_ge_10"] = argsort["speedup"] >= 10
        targets["identical_ranks"] = argsort["identical_ranks"]
    big = [r for r in results if r["n_images"] >= 100_000]
    if big:
        targets["peak_rss_100k_lt_2GB"] = all(r["peak_rss_mb"] < 2048 for r in big)
    summary["targets_met"] = targets
    return summary


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 50_000, 100_000], help="image counts N")
    p.add_argument("--captions-per-image", type=int, default=CAPTIONS_PER_IMAGE, help="texts per image")
    p.add_argument("--chunk-size", type=int, default=0, help="queries per block (0: auto, by memory)")
    p.add_argument("--threads", type=int, default=_cores(), help="torch threads (default: all cores)")
    p.add_argument("--argsort-at", type=int, default=10_000, help="N for the full-matrix sort (0: never)")
    p.add_argument("--repeats", type=int, default=0, help="timings per size (0: 3 at N<=10k, else 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--child", choices=["chunked", "argsort"], help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.child:
        print(json.dumps(child(args)))
        return
    results, argsort = measure_sizes(args)
    print(json.dumps(summarize(args, results, argsort)))

if __name__ == "__main__":
    main()
