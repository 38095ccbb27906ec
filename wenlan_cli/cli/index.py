"""`wenlan index`: a folder of images to an updatable search index."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, inference_workers_option, option, precision_option


@dataclass
class IndexConfig:
    """The options of `wenlan index` (and the keys of its `--config` file)."""

    images_dir: Path = option(help="Folder of images (searched recursively: jpg, png, webp, bmp).", argument=True)
    out: Path = option(help="The index folder to create or update.", flags=("--out", "-o"))
    checkpoint: str | None = option(None, help="Checkpoint or run directory (default: the one that built the existing index).")
    rebuild: bool = option(False, "--rebuild", help="Re-encode every image, also with a different checkpoint.")
    hash_contents: bool | None = option(None, "--hash/--no-hash", help="Record SHA-256 of every file and detect changes by content, not size + mtime (default: as the existing index).")
    skip_bad: bool = option(False, "--skip-bad", help="Leave unreadable images out (listed in index.json) instead of failing.")
    batch_size: int = option(64, help="Images per forward pass.")
    workers: int | None = inference_workers_option()
    device: str = device_option()
    precision: str = precision_option()
    backend: str = option("torch", help="torch, or onnx: --checkpoint is then a bundle of `wenlan export onnx` (default: the index's), run on onnxruntime without torch.")


def _index(call: Invocation, cfg: IndexConfig) -> None:
    """Build or update a search index of an image folder.

    Encode the images under IMAGES_DIR into an index for `wenlan search`. Re-running
    encodes only new or changed files and drops deleted ones."""
    from rich.console import Console
    from ..engine.progress import counting_progress

    from ..search.index import update_index
    from .options import check_inference_options, inference_workers

    from ..backends import check_backend, check_onnx_options

    images_dir, out, checkpoint, backend = cfg.images_dir, cfg.out, cfg.checkpoint, cfg.backend
    batch_size, workers, device, precision = cfg.batch_size, cfg.workers, cfg.device, cfg.precision
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
            images_dir, out, checkpoint, rebuild=cfg.rebuild, hash_contents=cfg.hash_contents, skip_bad=cfg.skip_bad,
            batch_size=batch_size, workers=n_workers, device=device, precision=precision, backend=backend,
            on_start=on_start, on_batch=lambda n: progress.advance(task, n) if task is not None else None,
        )
    finally:
        if task is not None:  # stopping a bar never started prints an empty line
            progress.stop()
    for item in report.skipped:
        err.print(f"skipped {item['error']}", markup=False, highlight=False)
    err.print(f"Indexed {report.summary()}", markup=False, highlight=False)


index = declared_command(_index, IndexConfig)


def register(app: typer.Typer) -> None:
    app.command("index")(index)
