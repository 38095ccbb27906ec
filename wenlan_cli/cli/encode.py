"""`wenlan encode`: image files/folders or texts to an (N, D) float32 .npy."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def encode(
    paths: Annotated[Optional[list[Path]], typer.Argument(help="Image files or folders (searched recursively: jpg, png, webp, bmp).")] = None,
    checkpoint: Annotated[str, Opt(help="Checkpoint directory, or a run directory.")] = ...,
    output: Annotated[Optional[Path], Opt("--output", "-o", help="The .npy to write (default: stdout, when it is redirected).")] = None,
    texts: Annotated[Optional[Path], Opt(help="Encode the texts of this file (one per line) instead of images.")] = None,
    manifest: Annotated[Optional[Path], Opt(help="Where to write the row order (default: next to --output).")] = None,
    dataset: Annotated[Optional[str], Opt(help="Encode a dataset split instead (its boxes are used): synth, aic-icc, ...")] = None,
    data_dir: Annotated[Optional[str], Opt(help="Folder of --dataset (synth: default is the cached copy).")] = None,
    split: Annotated[str, Opt(help="Split of --dataset.")] = "val",
    captions: Annotated[bool, Opt("--captions", help="With --dataset: encode the split's captions (in record order) instead of its images.")] = False,
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images out (the manifest lists them) instead of failing.")] = False,
    batch_size: Annotated[int, Opt(help="Items per forward pass.")] = 128,
    workers: Annotated[Optional[int], Opt(help="DataLoader processes decoding images (default: up to 4).")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16 or fp16 (GPU).")] = "fp32",
    backend: Annotated[str, Opt(help="torch, or onnx: --checkpoint is then a bundle of `wenlan export onnx`, run on onnxruntime without torch.")] = "torch",
) -> None:
    """Encode images or texts into vectors (.npy).

    The vectors are L2-normalised float32, one row per item, in the order the manifest
    records (folders: sorted paths)."""
    import os

    import numpy as np
    from rich.console import Console
    from ..engine.progress import counting_progress

    from ..data.records import ImageTextRecord
    from ..backends import check_backend, check_onnx_options, open_backend
    from ..data.imagefiles import collect_image_paths
    from ..data.files import read_text_lines
    from ..errors import UsageError
    from .options import check_file_output, check_inference_options

    sources = sum(x for x in (bool(paths), texts is not None, dataset is not None))
    if sources > 1:
        raise UsageError("give one of: image PATHS, --texts FILE or --dataset NAME.")
    if sources == 0:
        raise UsageError("give image files or folders to encode, --texts FILE, or --dataset NAME.")
    if captions and dataset is None:
        raise UsageError("--captions needs --dataset.")
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write binary .npy data to a terminal; pass -o FILE.npy or redirect stdout.")
    if check_backend(backend) == "onnx":
        dev = check_onnx_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    else:
        dev = check_inference_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    from ..output_paths import check_outputs, checkpoint_input, file_input, folder_input, path_input

    check_outputs(
        [("--output", output), ("--manifest", manifest or (output.with_suffix(".manifest.json") if output is not None else None))],
        [*(i for p in paths or [] for i in path_input("PATHS", p)), *file_input("--texts", texts),
         *checkpoint_input("--checkpoint", checkpoint), *folder_input("--data-dir", data_dir)],
    )
    if output is not None and output.suffix != ".npy":
        raise UsageError(f"--output {output} should end in .npy.")
    check_file_output("--output", output)
    check_file_output("--manifest", manifest)

    err = Console(stderr=True)
    records, owners, listed = None, None, []
    if dataset is not None:
        from ..data.sources import load_records

        records = load_records(dataset, data_dir, split)
        if captions:
            items = [c for r in records for c in r.captions]
            owners = [r.image_id for r in records for _ in r.captions]
        else:
            items = [r.image_path for r in records]
    elif texts is not None:
        items = read_text_lines(texts)
    else:
        not_files: list = []
        items = collect_image_paths(paths, skipped=not_files)
        for path, reason in not_files:
            err.print(f"skipped {path}: {reason}", markup=False, highlight=False, soft_wrap=True)
        listed = [{"path": str(path), "error": f"{path}: skipped, {reason}"} for path, reason in not_files]
    encoding_texts = texts is not None or captions
    if not items:
        raise UsageError(f"nothing to encode: {'no non-blank lines in ' + str(texts) if texts else 'no images found'}.")
    encoder = open_backend(backend, checkpoint, device=dev, precision=precision)
    progress = counting_progress("encoding", err, disable=not err.is_terminal)  # a bar only on a terminal (no stray newline in logs)
    skipped: list[dict] = []
    with progress:
        task = progress.add_task("encode", total=len(items))
        advance = lambda n: progress.advance(task, n)  # noqa: E731
        if encoding_texts:
            vectors = encoder.encode_texts(items, batch_size=batch_size, on_batch=advance)
            rows = items
        else:
            if records is None:
                records = [ImageTextRecord(image_id=str(p), image_path=p, captions=[]) for p in items]
            n_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
            vectors, kept, failures = encoder.encode_images(
                records, batch_size=batch_size, workers=n_workers, skip_bad=skip_bad, on_batch=advance,
            )
            rows = [str(items[i]) if dataset is None else records[i].image_id for i in kept]
            skipped = [{"path": str(items[i]), "error": message} for i, message in failures] + listed
    array = np.ascontiguousarray(vectors, dtype=np.float32)
    manifest_path = manifest or (output.with_suffix(".manifest.json") if output is not None else None)
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, array)
    else:
        try:
            np.save(WriteOnly(sys.stdout.buffer), array)
            sys.stdout.buffer.flush()
        except BrokenPipeError:  # the reader has all it wanted (`| head -c 10`)
            from . import closed_pipe_exit

            raise typer.Exit(closed_pipe_exit()) from None
    if manifest_path is not None:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps({
            "checkpoint": str(encoder.path),
            **({"backend": "onnx"} if backend == "onnx" else {}),
            "kind": "text" if encoding_texts else "image",
            "shape": list(array.shape),
            "rows": rows,
            **({"dataset": dataset, "split": split} if dataset else {}),
            **({"caption_images": owners} if owners is not None else {}),
            "skipped": skipped,
        }, ensure_ascii=False, indent=1), encoding="utf-8")
    where = str(output) if output is not None else "stdout"
    err.print(f"Encoded {array.shape[0]} {'texts' if encoding_texts else 'images'} -> {where} {tuple(array.shape)}"
              + (f"; row order in {manifest_path}" if manifest_path else "; pass --manifest FILE to record the row order")
              + (f"; skipped {len(skipped)} unreadable image(s) or entries that are not files" if skipped else ""))


class WriteOnly:
    """A stream seen only through `write`. numpy writes a real file with C's fwrite, which on
    a closed pipe (`wenlan encode ... | head -c 10`) fails as "OSError: N requested and M
    written"; through `write` the same failure is a BrokenPipeError, which the command
    turns into a quiet exit as other Unix tools do. Each write is completed (an
    unbuffered stdout, `python -u`, may take part of it and return the count)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._stream.write(view) or 0 :]
        return len(data)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
