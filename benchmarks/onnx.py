"""ONNX export: onnxruntime against PyTorch on the CPU, and the start-up of `wenlan encode`.

    python benchmarks/onnx.py [--configs brivl-tiny,brivl-base] [--rounds 3] [--startup-runs 3]

For each config a checkpoint of random weights is written (throughput does not depend on
the weights; `brivl-base` is the released BriVL's architecture: EfficientNet-B5 at 380 px
and a 12-layer BERT-base) and exported with `wenlan export onnx` (`export_onnx`, so its
parity check runs too). Then, on the same inputs (generated images decoded, resized, boxed
and normalised once, texts tokenised once and cut into the same length-sorted, padded
batches, saved to one .npz), `model.encode_image` / `model.encode_text` under
`torch.inference_mode` and the bundle's onnxruntime sessions run in alternation for
`--rounds` rounds, each pass in a fresh process of its own (the two runtimes' thread pools
spin-wait after a call, so in one process each slows the other); the fastest pass of each
is compared (images/s, texts/s; the first batch of a pass is its warm-up). Both use this
machine's default threads (torch: `torch.get_num_threads()`, onnxruntime: one per core).

Start-up: `wenlan encode --texts ONE_LINE.txt -o OUT.npy` in a fresh interpreter, from
spawn to exit, with `--backend torch` on the checkpoint and `--backend onnx` on the bundle
(alternating, median of `--startup-runs`).

Target: onnxruntime >= 1.3x PyTorch's images/s and texts/s for both configs. Prints one
JSON line.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this file's folder leads sys.path, where this file would shadow the
# `onnx` package itself.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SIZES = {  # images, image batch, texts, text batch
    "brivl-tiny": (256, 32, 2048, 128),
    "brivl-base": (24, 8, 256, 32),
}
CHARS = "一只两个三红色蓝绿黄白黑的圆形正方三角星小大狗猫在草地上左右边角奔跑坐着和里面中间有长短高矮树花人车"


def make_checkpoint(name: str, directory: Path) -> Path:
    import torch

    from wenlan_cli.models.registry import create_model, get_model_config
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab
    from wenlan_cli.engine.checkpoint import CheckpointContents, write_checkpoint

    config = get_model_config(name)
    tokenizer = tokenizer_from_vocab(build_char_vocab([CHARS]))
    torch.manual_seed(0)
    model = create_model(config, vocab_size=len(tokenizer), for_training=False).eval()
    info = {"step": 0, "vocab_size": len(tokenizer), "text_model_config": model.text_encoder.language_model.config.to_dict()}
    return write_checkpoint(directory / name, CheckpointContents(config, model.query_state_dict(), tokenizer, info))


def texts_for(count: int, seed: int = 0) -> list[str]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return ["".join(rng.choice(list(CHARS), size=int(rng.integers(8, 31)))) for _ in range(count)]


def write_inputs(checkpoint: Path, bundle_dir: Path, name: str, work: Path) -> Path:
    """The same inputs for both backends, prepared once and saved: generated images decoded,
    resized, boxed and normalised into batches; texts tokenised, sorted by length and padded
    into batches (what `wenlan encode` feeds either backend)."""
    from wenlan_cli.data.prepare import prepare_image_array
    from wenlan_cli.export.verify import generated_records
    from wenlan_cli.runtime.bundle import load_bundle
    from wenlan_cli.runtime.encode import image_inputs, text_inputs, tokenize

    import numpy as np

    n_images, image_batch, n_texts, text_batch = SIZES.get(name, SIZES["brivl-base"])
    bundle = load_bundle(bundle_dir)
    folder = work / f"images-{name}"
    folder.mkdir()
    records = generated_records(folder, bundle.settings, n_images, seed=1)
    prepared = [prepare_image_array(r, bundle.settings) for r in records]
    arrays = {}
    for b, i in enumerate(range(0, n_images, image_batch)):
        for key, value in image_inputs(bundle, prepared[i : i + image_batch]).items():
            arrays[f"images.{b}.{key}"] = value
    ids = tokenize(bundle, texts_for(n_texts))
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    for b, i in enumerate(range(0, n_texts, text_batch)):
        for key, value in text_inputs(bundle, [ids[j] for j in order[i : i + text_batch]]).items():
            arrays[f"texts.{b}.{key}"] = value
    path = work / f"inputs-{name}.npz"
    np.savez(path, **arrays)
    return path


def batches_of(inputs: Path, kind: str) -> list[dict]:
    import numpy as np

    data = np.load(inputs)
    out: dict[int, dict] = {}
    for key in data.files:
        part, index, name = key.split(".")
        if part == kind:
            out.setdefault(int(index), {})[name] = data[key]
    return [out[i] for i in sorted(out)]


def worker(backend: str, kind: str, source: Path, inputs: Path) -> None:
    """One timed pass in this (fresh) process: the first batch is the warm-up."""
    batches = batches_of(inputs, kind)
    if backend == "onnx":
        from wenlan_cli.runtime.bundle import load_bundle

        session = load_bundle(source).session("image" if kind == "images" else "text")
        run = lambda feed: session.run(None, feed)  # noqa: E731
    else:
        import torch

        from wenlan_cli.loading import load_checkpoint

        model = load_checkpoint(source).model.eval()
        encode = model.encode_image if kind == "images" else model.encode_text
        names = ("images", "boxes", "box_mask") if kind == "images" else ("input_ids", "attention_mask")

        def run(feed):
            with torch.inference_mode():
                encode(*(torch.from_numpy(feed[n]) for n in names))

    run(batches[0])
    start = time.perf_counter()
    for feed in batches[1:]:
        run(feed)
    seconds = time.perf_counter() - start
    count = sum(len(next(iter(feed.values()))) for feed in batches[1:])
    print(json.dumps({"rate": count / seconds}))


def timed_pass(backend: str, kind: str, source: Path, inputs: Path) -> float:
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", backend, "--kind", kind, "--source", str(source),
               "--inputs", str(inputs)]
    done = subprocess.run(command, check=True, capture_output=True, text=True, timeout=1200)
    return json.loads(done.stdout.strip().splitlines()[-1])["rate"]


def throughput(checkpoint: Path, bundle_dir: Path, name: str, rounds: int, work: Path) -> dict:
    """Each pass in its own fresh process, the backends alternating: onnxruntime's and
    OpenMP's thread pools spin-wait after a run, so in one process each slows the other."""
    inputs = write_inputs(checkpoint, bundle_dir, name, work)
    n_images, image_batch, n_texts, text_batch = SIZES.get(name, SIZES["brivl-base"])
    rates = {key: [] for key in ("torch_images", "onnx_images", "torch_texts", "onnx_texts")}
    for _ in range(rounds):
        for kind in ("images", "texts"):
            rates[f"torch_{kind}"].append(round(timed_pass("torch", kind, checkpoint, inputs), 2))
            rates[f"onnx_{kind}"].append(round(timed_pass("onnx", kind, bundle_dir, inputs), 2))
    best = {key: max(values) for key, values in rates.items()}
    return {
        "images": n_images, "image_batch": image_batch, "texts": n_texts, "text_batch": text_batch,
        "images_per_s": {"torch": best["torch_images"], "onnx": best["onnx_images"]},
        "texts_per_s": {"torch": best["torch_texts"], "onnx": best["onnx_texts"]},
        "onnx_vs_torch": {"images": round(best["onnx_images"] / best["torch_images"], 3),
                          "texts": round(best["onnx_texts"] / best["torch_texts"], 3)},
        "rounds": rates,
    }


def startup(checkpoint: Path, bundle_dir: Path, runs: int, work: Path) -> dict:
    text_file = work / "one.txt"
    text_file.write_text("一只红色的圆形\n", encoding="utf-8")
    times = {"torch": [], "onnx": []}
    for i in range(runs):
        for backend, source in (("torch", checkpoint), ("onnx", bundle_dir)):
            command = [sys.executable, "-m", "wenlan_cli", "encode", "--texts", str(text_file), "--checkpoint", str(source),
                       "--backend", backend, "-o", str(work / f"startup-{backend}-{i}.npy")]
            start = time.perf_counter()
            subprocess.run(command, check=True, capture_output=True, timeout=300)
            times[backend].append(round(time.perf_counter() - start, 3))
    return {backend: {"median_s": statistics.median(values), "runs_s": values} for backend, values in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="brivl-tiny,brivl-base")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--startup-runs", type=int, default=3)
    parser.add_argument("--worker", choices=["torch", "onnx"], help=argparse.SUPPRESS)
    parser.add_argument("--kind", choices=["images", "texts"], help=argparse.SUPPRESS)
    parser.add_argument("--source", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--inputs", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.kind, args.source, args.inputs)
        return

    import torch

    from wenlan_cli.export.onnx import export_onnx

    result = {"benchmark": "onnx", "torch": torch.__version__, "threads": torch.get_num_threads(),
              "cores": os.cpu_count(), "python": platform.python_version(), "configs": {}}
    import onnxruntime

    result["onnxruntime"] = onnxruntime.__version__
    with tempfile.TemporaryDirectory(prefix="wenlan-onnx-bench-") as tmp:
        work = Path(tmp)
        for name in [c for c in args.configs.split(",") if c]:
            checkpoint = make_checkpoint(name, work)
            start = time.perf_counter()
            report = export_onnx(checkpoint, work / f"{name}-onnx", samples=4, batch_size=4)
            entry = {"export_s": round(time.perf_counter() - start, 1),
                     "export_worst_cosine": {"image": report.parity.image.worst_cosine, "text": report.parity.text.worst_cosine}}
            entry.update(throughput(checkpoint, work / f"{name}-onnx", name, args.rounds, work))
            entry["encode_startup"] = startup(checkpoint, work / f"{name}-onnx", args.startup_runs, work)
            result["configs"][name] = entry
    print(json.dumps(result, ensure_ascii=False))


if __name__ == "__main__":
    main()
