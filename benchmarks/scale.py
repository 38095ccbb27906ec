"""Data at scale: time from the command to the first training step, and peak memory, by dataset size.

For each size N this script makes an AIC-ICC-layout dataset of N images x 5 captions over
hard-linked small JPEGs (benchmarks/scale_data.py), then runs, as a user would,

    wenlan pretrain --dataset aic-icc --data-dir D --steps 3 --eval-every 0 --log-every 1

in a subprocess, and measures from the moment it is started:

* `first_step_s`: until metrics.jsonl holds its first line (written right after step 1);
* `wall_s`: until the command exits (3 steps, the evaluation on 64 validation images and
  the final checkpoint included);
* `peak_rss_mb`: the command's peak resident memory (`ru_maxrss` from `wait4`; the datasets
  are made in another process, since a child's figure also counts this one's memory at
  the fork);
* `load_1min`: the machine's 1-minute load average as the run starts (a shared machine).

Targets (issue "Data at real scale", sections 2 and 5): at 210,000 images x 5 captions the
first step within 20 s, and peak memory at most 400 MB above the 3,000-image run. The same
run on shards (`wenlan data convert --shard-size 10000`, then `--dataset webdataset`) is
measured at `--shard-sizes` (10k, 100k and 1M by default), with the conversion's seconds;
there the targets are peak memory flat in N (within 10 % from the smallest to the largest
size) and the first step within 20 s at the largest. At `--throughput-sizes` the data path
alone is timed on both layouts (benchmarks/scale_throughput.py: samples/s of the DataLoader
pretrain builds, no model).

    flock /tmp/wenlan-bench.lock timeout 3000 python benchmarks/scale.py

prints one JSON line. `--sizes 3000,210000` measures other sizes. Converting 1M images
takes about half an hour on 2 busy cores; `--linked-shards` converts only the smallest
shard size and makes the larger ones by hard-linking its shards (the stream reads bytes
and keys, not contents), so the stream is measured at 1M in minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

DEFAULT_SIZES = (3_000, 10_000, 100_000, 210_000, 1_000_000)
DEFAULT_SHARD_SIZES = (10_000, 100_000, 1_000_000)
DEFAULT_THROUGHPUT_SIZES = (100_000,)
FIRST_STEP_TARGET_S = 20.0
RSS_OVER_SMALL_TARGET_MB = 400.0
SHARD_RSS_SPREAD_TARGET = 0.10


def wenlan_command() -> list[str]:
    """The `wenlan` console script of this interpreter's environment."""
    script = Path(sys.executable).with_name("wenlan")
    return [str(script)] if script.exists() else [sys.executable, "-m", "wenlan_cli"]


def measure(data_dir: Path, out: Path, timeout: float, dataset: str = "aic-icc") -> dict:
    """Run pretrain for 3 steps on `data_dir`; the times and peak memory described above."""
    command = [
        *wenlan_command(), "pretrain", "--dataset", dataset, "--data-dir", str(data_dir), "--steps", "3",
        "--eval-every", "0", "--log-every", "1", "--device", "cpu", "--out", str(out),
    ]
    metrics = out / "metrics.jsonl"
    load = round(os.getloadavg()[0], 2)  # the machine's 1-minute load as the run starts (shared machine)
    start = time.monotonic()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    first_step = None
    status = None
    usage = None
    while status is None:
        pid, wait_status, rusage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            status, usage = os.waitstatus_to_exitcode(wait_status), rusage
            process.returncode = status
            break
        if first_step is None and metrics.is_file() and metrics.stat().st_size > 0:
            first_step = time.monotonic() - start
        if time.monotonic() - start > timeout:
            process.kill()
            process.wait()
            return {"error": f"timed out after {timeout:.0f} s", "first_step_s": first_step}
        time.sleep(0.05)
    wall = time.monotonic() - start
    if status != 0:
        return {"error": f"exit {status}: {process.stderr.read().decode(errors='replace')[-400:]}"}
    return {
        "first_step_s": round(first_step, 2) if first_step is not None else None,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "load_1min": load,
    }


def shards_available() -> bool:
    """Whether this checkout has `wenlan data convert` (the shard format)."""
    result = subprocess.run([*wenlan_command(), "data", "--help"], capture_output=True, text=True)
    return "convert" in result.stdout


def convert(data: Path, out: Path, timeout: float) -> float:
    """`wenlan data convert` of the file layout into shards of 10,000 samples; its seconds."""
    began = time.monotonic()
    subprocess.run([*wenlan_command(), "data", "convert", str(data), str(out), "--from", "aic-icc", "--shard-size", "10000"],
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return round(time.monotonic() - began, 1)


def throughput(dataset: str, data_dir: Path, timeout: float) -> dict:
    """benchmarks/scale_throughput.py on `data_dir` in its own process: the data path's samples/s."""
    script = Path(__file__).resolve().with_name("scale_throughput.py")
    load = round(os.getloadavg()[0], 2)
    result = subprocess.run([sys.executable, str(script), "--dataset", dataset, "--data-dir", str(data_dir), "--batches", "100"],
                            capture_output=True, text=True, timeout=timeout)
    if result.returncode != 0:
        return {"error": f"exit {result.returncode}: {result.stderr[-400:]}"}
    return {**json.loads(result.stdout.strip().splitlines()[-1]), "load_1min": load}


def shard_verdict(shards: dict[str, dict]) -> dict:
    """Peak memory flat in N (smallest to largest size) and the first step at the largest size."""
    sizes = sorted((int(n) for n, m in shards.items() if "peak_rss_mb" in m))
    if len(sizes) < 2:
        return {}
    low, high = shards[str(sizes[0])], shards[str(sizes[-1])]
    spread = round(high["peak_rss_mb"] / low["peak_rss_mb"] - 1, 4)
    first = high["first_step_s"]
    return {
        "rss_change": spread, "target_rss_change": SHARD_RSS_SPREAD_TARGET, "from": sizes[0], "to": sizes[-1],
        "first_step_s_at_largest": first, "target_first_step_s": FIRST_STEP_TARGET_S,
        "met": bool(abs(spread) <= SHARD_RSS_SPREAD_TARGET and first is not None and first <= FIRST_STEP_TARGET_S),
    }


def sizes_option(text: str) -> list[int]:
    return [int(s) for s in text.split(",") if s]


def make_dataset(data: Path, n: int) -> float:
    """benchmarks/scale_data.py in its own process; its seconds. Not in this one: a child's
    peak RSS (`wait4`) counts this process's memory at the fork, which making 1M entries
    here would raise above a shard run's own."""
    began = time.monotonic()
    subprocess.run([sys.executable, str(Path(__file__).resolve().with_name("scale_data.py")), str(data), "--images", str(n)],
                   check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - began


def link_shards(base: Path, out: Path, n: int) -> None:
    """Shards of `n` training samples: `base`'s training shards hard-linked over and over,
    with its validation shards and an index listing them. The stream reads bytes and keys,
    not contents, so this measures it at `n` without converting `n` images."""
    index = json.loads((base / "index.json").read_text(encoding="utf-8"))
    train = index["splits"]["train"]
    out.mkdir(parents=True)
    shards, count = [], 0
    while count < n:
        source = train["shards"][len(shards) % len(train["shards"])]
        name = f"train-{len(shards):06d}.tar"
        os.link(base / source["name"], out / name)
        shards.append({**source, "name": name})
        count += source["samples"]
    for shard in index["splits"]["val"]["shards"]:
        os.link(base / shard["name"], out / shard["name"])
    train.update(shards=shards, samples=count)
    (out / "index.json").write_text(json.dumps(index), encoding="utf-8")


def measure_size(n: int, work: Path, args, results: dict, shards: dict, speeds: dict) -> None:
    """Every measurement asked for at size `n`, each on a fresh dataset folder removed after."""
    base = work / f"shards-{min(args.shard_sizes)}" if args.shard_sizes else None
    if args.linked_shards and n in args.shard_sizes and n != min(args.shard_sizes):
        link_shards(base, work / f"shards-{n}", n)
        shards[str(n)] = {**measure(work / f"shards-{n}", work / f"run-shards-{n}", args.timeout, "webdataset"),
                          "linked_from": min(args.shard_sizes)}
        print(f"{n:>9,} images, shards (linked): {shards[str(n)]}", file=sys.stderr)
        shutil.rmtree(work / f"shards-{n}")
        if n not in args.sizes and n not in args.throughput_sizes:
            return
    data = work / f"data-{n}"
    made = make_dataset(data, n)
    if n in args.sizes:
        results[str(n)] = {**measure(data, work / f"run-{n}", args.timeout), "make_dataset_s": round(made, 1)}
        print(f"{n:>9,} images, file layout: {results[str(n)]}", file=sys.stderr)
    if n in args.throughput_sizes:
        speeds[str(n)] = {"file_layout": throughput("aic-icc", data, args.timeout)}
    if (n in args.shard_sizes and str(n) not in shards) or n in args.throughput_sizes:
        converted = convert(data, work / f"shards-{n}", 4 * args.timeout)
        if n in args.shard_sizes and str(n) not in shards:
            shards[str(n)] = {**measure(work / f"shards-{n}", work / f"run-shards-{n}", args.timeout, "webdataset"),
                              "convert_s": converted}
            print(f"{n:>9,} images, shards: {shards[str(n)]}", file=sys.stderr)
        if n in args.throughput_sizes:
            speeds[str(n)]["shards"] = throughput("webdataset", work / f"shards-{n}", args.timeout)
            print(f"{n:>9,} images, data path alone: {speeds[str(n)]}", file=sys.stderr)
        if not (args.linked_shards and n == min(args.shard_sizes)):
            shutil.rmtree(work / f"shards-{n}")
    shutil.rmtree(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=sizes_option, default=list(DEFAULT_SIZES), help="comma-separated image counts")
    parser.add_argument("--shard-sizes", type=sizes_option, default=list(DEFAULT_SHARD_SIZES),
                        help="comma-separated image counts also measured as shards")
    parser.add_argument("--throughput-sizes", type=sizes_option, default=list(DEFAULT_THROUGHPUT_SIZES),
                        help="comma-separated image counts at which the data path's samples/s is timed on both layouts")
    parser.add_argument("--linked-shards", action="store_true",
                        help="convert only the smallest --shard-sizes; larger shard sets are its shards hard-linked (minutes, not hours, at 1M)")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds per pretrain run")
    parser.add_argument("--work", type=Path, default=None, help="scratch folder (default: a temporary one)")
    args = parser.parse_args()
    if not shards_available():
        args.shard_sizes, args.throughput_sizes = [], []

    work = Path(tempfile.mkdtemp(prefix="wenlan-scale-", dir=args.work))
    results: dict[str, dict] = {}
    shards: dict[str, dict] = {}
    speeds: dict[str, dict] = {}
    try:
        for n in sorted(set(args.sizes) | set(args.shard_sizes) | set(args.throughput_sizes)):
            measure_size(n, work, args, results, shards, speeds)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    line: dict = {"benchmark": "scale", "command": "wenlan pretrain --dataset aic-icc --steps 3 --eval-every 0",
                  "captions_per_image": 5, "file_layout": results}
    small, big = results.get("3000", {}), results.get("210000", {})
    if "peak_rss_mb" in small and "peak_rss_mb" in big:
        over = round(big["peak_rss_mb"] - small["peak_rss_mb"], 1)
        line["aic_icc_size"] = {
            "first_step_s": big["first_step_s"], "target_first_step_s": FIRST_STEP_TARGET_S,
            "rss_over_3000_mb": over, "target_rss_over_3000_mb": RSS_OVER_SMALL_TARGET_MB,
            "met": bool(big["first_step_s"] is not None and big["first_step_s"] <= FIRST_STEP_TARGET_S
                        and over <= RSS_OVER_SMALL_TARGET_MB),
        }
    line["shards"] = shards if args.shard_sizes else "not measured (--shard-sizes is empty)"
    if shards:
        line["shards_flat"] = shard_verdict(shards)
    if speeds:
        line["data_path_samples_per_s"] = speeds
    print(json.dumps(line, ensure_ascii=False))


if __name__ == "__main__":
    main()
