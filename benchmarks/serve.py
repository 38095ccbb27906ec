#!/usr/bin/env python
"""Latency of `wenlan serve` under 16 concurrent clients, against an index of 100k vectors.

The index is synthesised in the format of `wenlan index` (random unit vectors, a manifest
of 100k paths, the identity of a real checkpoint) so that only the service is measured;
text queries are Chinese captions in the synthetic data's vocabulary and go through the
real text tower. The server is the real `wenlan serve` (uvicorn, no access log) in its own
process on 127.0.0.1; each client is a thread with one keep-alive HTTP/1.1 connection.

Measured: p50 / p90 / p99 / max latency and errors over `--requests` text queries (after
`--warmup` unmeasured ones), the server's resident memory (RSS) before and after them and
its peak in between (sampled), the server's CPU time per request (all threads; less
sensitive to other load on the machine than latency), and the mean micro-batch size the
server formed.
Target: p99 < 100 ms for text queries, zero errors, memory flat.

    flock /tmp/wenlan-bench.lock timeout 900 python benchmarks/serve.py
    python benchmarks/serve.py --vectors 20000 --requests 500      # a quick smoke run

Without --checkpoint a brivl-tiny checkpoint is trained for 2 steps first (its weights
do not matter for latency). Bounded: at most --requests requests and --max-seconds
seconds of load. Prints progress to stderr and ONE JSON line to stdout at the end.
"""

from __future__ import annotations

import argparse
import http.client
import itertools
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from wenlan_cli.search.index import FORMAT, INDEX_FILE, VERSION, checkpoint_identity  # noqa: E402


def log(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def tiny_checkpoint(work: Path) -> Path:
    from wenlan_cli.config import TrainConfig
    from wenlan_cli.data.synthetic import write_synthetic_dataset
    from wenlan_cli.train.loop import Pretrainer

    data = write_synthetic_dataset(work / "synth", train=32, val=8, test=8, seed=0)
    config = TrainConfig(model="brivl-tiny", dataset="synth", data_dir=str(data), out=str(work / "run"), steps=2,
                         batch_size=8, queue_size=16, warmup=0, log_every=2, workers=0, seed=0)
    return Path(Pretrainer(config).run().checkpoint)


def synthetic_index(directory: Path, images_dir: Path, checkpoint: Path, count: int, seed: int = 0) -> None:
    """An index of `count` random unit vectors in the layout `wenlan index` writes."""
    identity = checkpoint_identity(checkpoint)
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((count, identity["embed_dim"]), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    directory.mkdir(parents=True)
    images_dir.mkdir(parents=True, exist_ok=True)
    np.save(directory / "vectors.bench.npy", vectors)
    with open(directory / "manifest.bench.jsonl", "w", encoding="utf-8") as handle:
        for i in range(count):
            handle.write(json.dumps({"path": f"{i // 1000:03d}/{i:06d}.jpg", "size": 1000, "mtime_ns": 0}) + "\n")
    info = {"format": FORMAT, "version": VERSION, "images_dir": str(images_dir.resolve()), "count": count,
            "dim": identity["embed_dim"], "hash_contents": False, "checkpoint": identity, "skipped": [],
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "vectors": "vectors.bench.npy",
            "manifest": "manifest.bench.jsonl"}
    (directory / INDEX_FILE).write_text(json.dumps(info, ensure_ascii=False), encoding="utf-8")


def captions(limit: int = 400) -> list[str]:
    """Distinct Chinese queries in the synthetic data's vocabulary."""
    from wenlan_cli.data.synthetic import COLOURS, POSITIONS, SHAPES

    counts = ["一个", "两个", "三个"]
    out = [f"{place[0]}有{count}{colour}{shape[0]}"
           for place, count, colour, shape in itertools.product(POSITIONS.values(), counts, COLOURS, SHAPES.values())]
    return out[:limit]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of process `pid` so far (all its threads)."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def load(port: int, queries: list[str], total: int, clients: int, k: int, deadline: float):
    """`total` GET /search requests from `clients` threads; [(seconds, ok)], wall seconds."""
    counter = itertools.count()
    results: list[tuple[float, bool]] = []
    lock = threading.Lock()

    def client() -> None:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine = []
        while time.monotonic() < deadline:
            n = next(counter)
            if n >= total:
                break
            path = "/search?" + urllib.parse.urlencode({"q": queries[n % len(queries)], "k": k})
            start = time.perf_counter()
            try:
                connection.request("GET", path)
                response = connection.getresponse()
                body = response.read()
                ok = response.status == 200 and body.startswith(b"{")
            except (OSError, http.client.HTTPException):
                ok = False
                connection.close()
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            mine.append((time.perf_counter() - start, ok))
        connection.close()
        with lock:
            results.extend(mine)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, time.perf_counter() - start


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vectors", type=int, default=100_000)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--warmup", type=int, default=300)
    parser.add_argument("-k", type=int, default=10)
    parser.add_argument("--max-seconds", type=float, default=600, help="Stop the load after this long.")
    parser.add_argument("--checkpoint", help="A checkpoint to serve (default: train brivl-tiny for 2 steps).")
    parser.add_argument("--target-p99-ms", type=float, default=100.0)
    return parser.parse_args()


def wait_until_up(server: subprocess.Popen, port: int) -> tuple[dict, float]:
    """Poll /healthz until `wenlan serve` answers: its health and the seconds it took."""
    started = time.monotonic()
    while True:
        if server.poll() is not None:
            raise SystemExit(f"wenlan serve exited: {server.stderr.read()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                health = json.loads(response.read())
            return health, time.monotonic() - started
        except OSError:
            if time.monotonic() - started > 180:
                raise SystemExit("wenlan serve did not start within 180 s") from None
            time.sleep(0.2)


def measure_load(server: subprocess.Popen, port: int, args) -> dict:
    """Warm up, then the timed load with the server's memory sampled every 0.25 s and its
    CPU time counted: the raw figures `summarize` turns into the JSON line."""
    queries = captions()
    load(port, queries, args.warmup, args.clients, args.k, time.monotonic() + 120)
    rss_before = rss_mb(server.pid)
    cpu_before = cpu_seconds(server.pid)
    samples, stop = [rss_before], threading.Event()

    def sample() -> None:
        while not stop.wait(0.25):
            samples.append(rss_mb(server.pid))

    sampler = threading.Thread(target=sample)
    sampler.start()
    log(f"{args.requests:,} requests from {args.clients} clients")
    results, seconds = load(port, queries, args.requests, args.clients, args.k, time.monotonic() + args.max_seconds)
    stop.set()
    sampler.join()
    rss_after = rss_mb(server.pid)
    server_cpu = cpu_seconds(server.pid) - cpu_before
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=10) as response:
        batches = json.loads(response.read()).get("recent_batch_sizes", [])
    return {"results": results, "seconds": seconds, "rss_before": rss_before, "rss_after": rss_after,
            "samples": samples, "server_cpu": server_cpu, "batches": batches}


def summarize(args, health: dict, startup: float, m: dict) -> dict:
    results, seconds, batches = m["results"], m["seconds"], m["batches"]
    latencies = [s * 1000 for s, ok in results if ok]
    errors = sum(1 for _, ok in results if not ok)
    p99 = percentile(latencies, 99)
    return {
        "benchmark": "serve",
        "vectors": args.vectors,
        "dim": health["dim"],
        "clients": args.clients,
        "k": args.k,
        "requests": len(results),
        "errors": errors,
        "seconds": round(seconds, 2),
        "requests_per_s": round(len(results) / seconds, 1),
        "p50_ms": round(percentile(latencies, 50), 2),
        "p90_ms": round(percentile(latencies, 90), 2),
        "p99_ms": round(p99, 2),
        "max_ms": round(max(latencies), 2) if latencies else None,
        "mean_ms": round(statistics.fmean(latencies), 2) if latencies else None,
        "target_p99_ms": args.target_p99_ms,
        "p99_met": bool(p99 < args.target_p99_ms),
        "rss_before_mb": round(m["rss_before"], 1),
        "rss_after_mb": round(m["rss_after"], 1),
        "rss_peak_mb": round(max(m["samples"]), 1),
        "rss_growth_mb": round(m["rss_after"] - m["rss_before"], 1),
        "server_cpu_ms_per_request": round(m["server_cpu"] * 1000 / max(1, len(results)), 2),
        "mean_batch_last_16": round(statistics.fmean(batches), 2) if batches else None,
        "server_startup_s": round(startup, 1),
        "cpus": os.cpu_count(),
    }


def main() -> None:
    args = parse_args()
    with tempfile.TemporaryDirectory(prefix="wenlan-serve-bench-") as tmp:
        work = Path(tmp)
        checkpoint = Path(args.checkpoint) if args.checkpoint else tiny_checkpoint(work)
        log(f"checkpoint {checkpoint}; writing an index of {args.vectors:,} vectors")
        synthetic_index(work / "idx", work / "images", checkpoint, args.vectors)
        port = free_port()
        server = subprocess.Popen(
            [sys.executable, "-m", "wenlan_cli", "serve", "--index", str(work / "idx"), "--port", str(port),
             "--device", "cpu", "--no-access-log"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        try:
            health, startup = wait_until_up(server, port)
            log(f"server up in {startup:.1f} s with {health['images']:,} images; warming up")
            measured = measure_load(server, port, args)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps(summarize(args, health, startup, measured)))

if __name__ == "__main__":
    main()
