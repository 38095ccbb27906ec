"""`wenlan index`: a folder of images to an updatable search index."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def index(
    images_dir: Annotated[Path, typer.Argument(help="Folder of images (searched recursively: jpg, png, webp, bmp).")],
    out: Annotated[Path, Opt("--out", "-o", help="The index folder to create or update.")],
    checkpoint: Annotated[Optional[str], Opt(help="Checkpoint or run directory (default: the one that built the existing index).")] = None,
    rebuild: Annotated[bool, Opt("--rebuild", help="Re-encode every image, also with a different checkpoint.")] = False,
    hash_contents: Annotated[Optional[bool], Opt("--hash/--no-hash", help="Record SHA-256 of every file and detect changes by content, not size + mtime (default: as the existing index).")] = None,
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images out (listed in index.json) instead of failing.")] = False,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 64,
    workers: Annotated[Optional[int], Opt(help="DataLoader processes decoding images (default: up to 4).")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16 or fp16 (GPU).")] = "fp32",
    backend: Annotated[str, Opt(help="torch, or onnx: --checkpoint is then a bundle of `wenlan export onnx` (default: the index's), run on onnxruntime without torch.")] = "torch",
) -> None:
    """Build or update a search index of an image folder.

    Encode the images under IMAGES_DIR into an index for `wenlan search`. Re-running
    encodes only new or changed files and drops deleted ones."""
    from rich.console import Console
    from ..engine.progress import counting_progress

    from ..search.index import update_index
    from .options import check_inference_options, inference_workers

    from ..backends import check_backend, check_onnx_options

    if check_backend(backend) == "onnx":
        check_onnx_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    else:
        check_inference_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    from ..output_paths import check_outputs, checkpoint_input, folder_input

    check_outputs([("--out", out)], [*folder_input("IMAGES_DIR", images_dir), *checkpoint_input("--checkpoint", checkpoint)])
    err = Console(stderr=True)
    n_workers = inference_workers(workers)
    progress = counting_progress("indexing", err)
    task = None

    def on_start(total: int) -> None:
        nonlocal task
        if total:
            progress.start()
            task = progress.add_task("index", total=total)

    try:
        report = update_index(
            images_dir, out, checkpoint, rebuild=rebuild, hash_contents=hash_contents, skip_bad=skip_bad,
            batch_size=batch_size, workers=n_workers, device=device, precision=precision, backend=backend,
            on_start=on_start, on_batch=lambda n: progress.advance(task, n) if task is not None else None,
        )
    finally:
        if task is not None:  # stopping a bar never started prints an empty line
            progress.stop()
    for item in report.skipped:
        err.print(f"skipped {item['error']}", markup=False, highlight=False)
    err.print(f"Indexed {report.summary()}", markup=False, highlight=False)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
