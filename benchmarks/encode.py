"""Encode throughput: `wenlan encode` on a folder of JPEGs against the bare image forward.

    python benchmarks/encode.py [--checkpoint DIR] [--images 2000] [--rss-sizes 2000,8000]
                                [--variants synth128,photo640] [--configs default,w0,w1u,w2] [--quick]

Two folders of generated JPEGs:

* `synth128`: the built-in synthetic dataset's images (128x128, ~3 KB each), written by
  `write_synthetic_dataset`; what `wenlan pretrain` trains on by default.
* `photo640`: 640x480 photo-like JPEGs (quality 90, ~80 KB each: smooth colour fields,
  mid-frequency blotches and sensor-like noise), so JPEG decoding and the downscale to
  the model's input cost what they cost on real photos.

End-to-end is the command users run, `wenlan_cli.cli.main(["encode", FOLDER,
"--checkpoint", CK, "-o", OUT.npy, ...])`, timed around the whole call in a fresh
subprocess (checkpoint load, folder listing, decoding in DataLoader workers, the forward,
writing the .npy and manifest; warm-up included; not the interpreter's start-up nor
`import torch`), and also around its `encode_images` call alone (the steady state: the
DataLoader and the forward; `fixed_s` is the rest: model-library imports, checkpoint
load, listing, saving). Forward-only is `model.encode_image` on
the same images already decoded, resized, normalised and batched in memory (same batch
size, same torch threads, one warm-up batch excluded), also in a fresh subprocess. The two
alternate for `--rounds` rounds and the medians are compared. Target: e2e / forward >= 0.8.

Configs: `default` (the CLI's own worker count), `wN` (`--workers N`), `wNtM` (also
`torch.set_num_threads(M)` in the process before the command) and a `u` suffix (`w1u`):
without `encode_images`' cap on torch's threads while workers decode
(`threads_beside_workers`), i.e. as before that cap existed, to show what it buys.

Peak memory: the CLI path again on folders of each `--rss-sizes` images (each a fresh
subprocess, with the first config's workers), sampling every 50 ms the main process's RSS
plus each DataLoader worker's private memory (`tree_peak_mb`: pages a forked worker shares
with the main process counted once) and the plain RSS sum over the process tree; ru_maxrss
of the main process and of the largest child are reported too. Target: flat (the largest
folder's peak within 10% or 50 MB of the smallest's).

Without `--checkpoint` a brivl-tiny checkpoint is trained for two steps on a tiny synthetic
set (throughput does not depend on the weights). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

HERE = Path(__file__).resolve()

from _images import photo_like  # noqa: E402  (benchmarks/ is on sys.path when run as a script)


# Data ---------------------------------------------------------------------------------
def make_source(root: Path, variant: str, count: int) -> list[Path]:
    """`count` distinct JPEGs of `variant` under root/variant-src (reused when present)."""
    src = root / f"{variant}-src-{count}"
    done = src / ".complete"
    if not done.exists():
        if variant == "synth128":
            from wenlan_cli.data.synthetic import write_synthetic_dataset

            write_synthetic_dataset(src, train=count, val=0, test=0, seed=0, image_size=128)
        elif variant == "photo640":
            src.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                photo_like(i).save(src / f"{i:06d}.jpg", quality=90)
        else:
            raise SystemExit(f"unknown variant {variant!r}")
        done.write_text("ok\n")
    return sorted(p for p in src.rglob("*.jpg"))


def make_folder(root: Path, variant: str, files: list[Path], count: int) -> Path:
    """A folder of exactly `count` images: hard links to `files`, cycled if needed."""
    folder = root / f"{variant}-{count}"
    if not folder.exists():
        tmp = root / f".{folder.name}.tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        for i in range(count):
            target = tmp / f"{i:06d}.jpg"
            if not target.exists():
                os.link(files[i % len(files)], target)
        tmp.rename(folder)
    return folder


def train_tiny_checkpoint(root: Path) -> Path:
    from wenlan_cli.config import TrainConfig
    from wenlan_cli.data.synthetic import write_synthetic_dataset
    from wenlan_cli.train.loop import Pretrainer

    final = root / "tiny-run" / "final"
    if final.exists():
        return final
    data = write_synthetic_dataset(root / "tiny-data", train=64, val=16, test=0, seed=1)
    cfg = TrainConfig(model="brivl-tiny", dataset="synth", data_dir=str(data), out=str(root / "tiny-run"), steps=2,
                      batch_size=16, queue_size=64, warmup=1, log_every=1, workers=0)
    from rich.console import Console

    return Pretrainer(cfg, console=Console(stderr=True, quiet=True)).run().checkpoint


# Memory of a process tree -----------------------------------------------------------------
def _tree(pid: int) -> list[int]:
    pids, stack = [], [pid]
    while stack:
        p = stack.pop()
        pids.append(p)
        try:
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    stack.extend(int(c) for c in f.read().split())
        except OSError:
            pass
    return pids


def _rollup(pid: int) -> tuple[int, int]:
    """(RSS, private = Private_Clean + Private_Dirty) of one process in bytes; (0, 0)
    when it is gone."""
    rss = private = 0
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Rss:"):
                    rss = int(line.split()[1]) * 1024
                elif line.startswith(("Private_Clean:", "Private_Dirty:")):
                    private += int(line.split()[1]) * 1024
    except OSError:
        pass
    return rss, private


class TreeMemory:
    """Samples the memory of this process and its descendants: `peak_tree` is the RSS of
    this process plus the private memory of each descendant (pages a forked DataLoader
    worker still shares with it are counted once; unlike PSS, the figure does not depend
    on what other processes on the machine map the same libraries); `peak_rss` is the
    plain sum of RSS (shared pages counted in every process)."""

    def __init__(self, interval: float = 0.05) -> None:
        self.interval = interval
        self.peak_rss = self.peak_tree = 0
        self.max_processes = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        root = os.getpid()
        pids = _tree(root)
        values = {p: _rollup(p) for p in pids}
        self.peak_rss = max(self.peak_rss, sum(v[0] for v in values.values()))
        tree = values[root][0] + sum(v[1] for p, v in values.items() if p != root)
        self.peak_tree = max(self.peak_tree, tree)
        self.max_processes = max(self.max_processes, len(pids))

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def __enter__(self):
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()


# Children ---------------------------------------------------------------------------------
def child_e2e(args) -> dict:
    """The CLI command, timed; optionally with process-tree memory sampling."""
    import resource

    import wenlan_cli.encode as encode_module
    from wenlan_cli.cli import main

    timings = {}
    original = encode_module.encode_images

    def timed_encode_images(*a, **k):
        start = time.perf_counter()
        try:
            return original(*a, **k)
        finally:
            timings["encode_images_s"] = time.perf_counter() - start
            timings["workers"] = k.get("workers")

    encode_module.encode_images = timed_encode_images
    if args.config.endswith("u"):  # as before encode_images capped torch's threads
        from contextlib import nullcontext

        encode_module.threads_beside_workers = lambda device, workers: nullcontext()
    out = Path(args.out)
    argv = ["encode", str(args.folder), "--checkpoint", str(args.checkpoint), "-o", str(out), "--batch-size", str(args.batch_size)]
    workers, threads = parse_config(args.config)
    if workers is not None:
        argv += ["--workers", str(workers)]
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
    memory = TreeMemory() if args.memory else None
    start = time.perf_counter()
    if memory is not None:
        with memory:
            code = main(argv)
    else:
        code = main(argv)
    elapsed = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"wenlan encode exited with {code}")
    import numpy as np

    n = int(np.load(out, mmap_mode="r").shape[0])
    result = {
        "images": n,
        "seconds": elapsed,
        "images_per_s": n / elapsed,
        "encode_images_per_s": n / timings["encode_images_s"],
        "fixed_s": elapsed - timings["encode_images_s"],
        "workers": timings.get("workers"),
        "main_maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "largest_child_maxrss_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }
    if memory is not None:
        result.update(tree_peak_mb=memory.peak_tree / 2**20, tree_peak_rss_sum_mb=memory.peak_rss / 2**20,
                      processes=memory.max_processes)
    return result


def child_forward(args) -> dict:
    """`encode_image` on the folder's images preloaded as normalised batches."""
    import torch

    from wenlan_cli.data.pipeline import normalize_images, pad_boxes, prepare_image
    from wenlan_cli.data.imagefiles import collect_image_paths
    from wenlan_cli.data.records import ImageTextRecord
    from wenlan_cli.loading import load_checkpoint

    loaded = load_checkpoint(args.checkpoint, device="cpu")
    model, settings = loaded.model, loaded.settings
    paths = collect_image_paths([args.folder])
    items = [prepare_image(ImageTextRecord(str(p), p, []), settings) for p in paths]
    batches = []
    for start in range(0, len(items), args.batch_size):
        chunk = items[start : start + args.batch_size]
        boxes, mask = pad_boxes([b for _, b in chunk], settings.max_regions)
        images = normalize_images(torch.stack([p for p, _ in chunk]), settings.mean, settings.std)
        batches.append((images, boxes, mask))
    del items
    with torch.no_grad():
        model.encode_image(*batches[0])  # warm-up
        start = time.perf_counter()
        for batch in batches:
            model.encode_image(*batch)
        elapsed = time.perf_counter() - start
    return {"images": len(paths), "seconds": elapsed, "images_per_s": len(paths) / elapsed}


def parse_config(name: str) -> tuple[int | None, int | None]:
    """'default' -> (None, None); 'wN' -> (N, None); 'wNtM' -> (N, M); a trailing 'u'
    (uncapped threads) is ignored here."""
    if name == "default":
        return None, None
    if not name.startswith("w"):
        raise SystemExit(f"bad config {name!r}: use default, wN, wNtM, with an optional u suffix")
    workers, _, threads = name[1:].removesuffix("u").partition("t")
    return int(workers), int(threads) if threads else None


def run_child(kind: str, folder: Path, checkpoint: Path, batch_size: int, config: str = "default", memory=False) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, str(HERE), "--child", kind, "--folder", str(folder), "--checkpoint", str(checkpoint),
               "--batch-size", str(batch_size), "--out", str(Path(tmp) / "vectors.npy"), "--config", config]
        if memory:
            cmd.append("--memory")
        proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"child {kind} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# Parent -----------------------------------------------------------------------------------
def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", type=Path, help="a checkpoint to encode with (default: train a tiny one)")
    parser.add_argument("--images", type=int, default=2000, help="images in the throughput folders")
    parser.add_argument("--variants", default="synth128,photo640")
    parser.add_argument("--rss-sizes", default="2000,8000")
    parser.add_argument("--rss-variant", default="synth128")
    parser.add_argument("--batch-size", type=int, default=128, help="as `wenlan encode`'s default")
    parser.add_argument("--configs", default="default,w0,w1u,w2",
                        help="comma list of default (the CLI's worker count), wN (--workers N), wNtM (+ M torch "
                             "threads), u suffix: without encode_images' thread cap")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--workdir", type=Path, help="keep generated data here (reused by later runs)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 images, RSS at 256 and 1024, one round")
    parser.add_argument("--child", choices=["e2e", "forward"], help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", default="default", help=argparse.SUPPRESS)
    return parser.parse_args()


def prepare_folders(root: Path, args, rss_sizes: list[int]) -> tuple[dict[str, Path], dict[int, Path]]:
    """The throughput folder of each variant and the memory folders of each size."""
    folders = {}
    for variant in [v for v in args.variants.split(",") if v]:
        files = make_source(root, variant, args.images)
        folders[variant] = make_folder(root, variant, files, args.images)
    rss_folders = {}
    if rss_sizes:
        files = make_source(root, args.rss_variant, max(rss_sizes))
        rss_folders = {n: make_folder(root, args.rss_variant, files, n) for n in rss_sizes}
    return folders, rss_folders


def measure_throughput(variant: str, folder: Path, checkpoint: Path, configs: list[str], args) -> list[dict]:
    """Rounds of every config end to end, each round with one forward-only run to
    compare with; one row per config, medians over the rounds."""
    import torch

    runs = {c: [] for c in configs}
    forwards = []
    for _ in range(args.rounds):
        for c in configs:
            runs[c].append(run_child("e2e", folder, checkpoint, args.batch_size, config=c))
        forwards.append(run_child("forward", folder, checkpoint, args.batch_size))
    forward = statistics.median(r["images_per_s"] for r in forwards)
    rows = []
    for c, results in runs.items():
        e2e = statistics.median(r["images_per_s"] for r in results)
        loop = statistics.median(r["encode_images_per_s"] for r in results)
        rows.append({
            "variant": variant,
            "images": args.images,
            "config": c,
            "workers": results[0]["workers"],
            "threads_set": parse_config(c)[1] or torch.get_num_threads(),
            "thread_cap": not c.endswith("u"),
            "e2e_images_per_s": round(e2e, 1),
            "encode_images_per_s": round(loop, 1),
            "forward_images_per_s": round(forward, 1),
            "ratio": round(e2e / forward, 3),
            "ratio_encode_images": round(loop / forward, 3),
            "fixed_s": round(statistics.median(r["fixed_s"] for r in results), 2),
        })
    return rows


def measure_memory(rss_folders: dict[int, Path], checkpoint: Path, config: str, batch_size: int) -> list[dict]:
    """Peak memory of the whole process tree encoding folders of growing size."""
    memory = []
    for n, folder in rss_folders.items():
        r = run_child("e2e", folder, checkpoint, batch_size, config=config, memory=True)
        memory.append({
            "images": n,
            "workers": r["workers"],
            "tree_peak_mb": round(r["tree_peak_mb"], 1),
            "tree_peak_rss_sum_mb": round(r["tree_peak_rss_sum_mb"], 1),
            "main_maxrss_mb": round(r["main_maxrss_mb"], 1),
            "largest_child_maxrss_mb": round(r["largest_child_maxrss_mb"], 1),
            "processes": r["processes"],
            "images_per_s": round(r["images_per_s"], 1),
        })
    return memory


def run(root: Path, args) -> dict:
    import torch

    setup_start = time.perf_counter()
    checkpoint = args.checkpoint or train_tiny_checkpoint(root)
    rss_sizes = [int(x) for x in args.rss_sizes.split(",") if x]
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    folders, rss_folders = prepare_folders(root, args, rss_sizes)
    setup_s = time.perf_counter() - setup_start

    throughput = []
    for variant, folder in folders.items():
        throughput.extend(measure_throughput(variant, folder, checkpoint, configs, args))
    memory = measure_memory(rss_folders, checkpoint, configs[0], args.batch_size)
    flat = None
    if len(memory) >= 2:
        small, large = memory[0]["tree_peak_mb"], memory[-1]["tree_peak_mb"]
        flat = large - small <= max(0.10 * small, 50.0)
    default_rows = [t for t in throughput if t["config"] == configs[0]]
    return {
        "benchmark": "encode",
        "quick": args.quick,
        "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "batch_size": args.batch_size,
        "rounds": args.rounds,
        "checkpoint": "given" if args.checkpoint else "brivl-tiny (2 steps)",
        "throughput": throughput,
        "memory": memory,
        "memory_growth_mb": round(memory[-1]["tree_peak_mb"] - memory[0]["tree_peak_mb"], 1) if len(memory) >= 2 else None,
        "setup_s": round(setup_s, 1),
        "target_ratio": 0.8,
        "met": all(t["ratio"] >= 0.8 for t in default_rows) and flat is not False,
        "met_steady_state": all(t["ratio_encode_images"] >= 0.8 for t in default_rows),
        "best": {v: max((t for t in throughput if t["variant"] == v), key=lambda t: t["e2e_images_per_s"])["config"]
                 for v in folders},
        "memory_flat": flat,
    }


def main() -> None:
    args = parse_args()
    if args.child:
        result = child_e2e(args) if args.child == "e2e" else child_forward(args)
        print(json.dumps(result))
        return
    if args.quick:
        args.images, args.rss_sizes, args.rounds = 256, "256,1024", 1
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        print(json.dumps(run(args.workdir, args)))
        return
    with tempfile.TemporaryDirectory(prefix="wenlan-encode-bench-") as tmp:
        print(json.dumps(run(Path(tmp), args)))

if __name__ == "__main__":
    main()
