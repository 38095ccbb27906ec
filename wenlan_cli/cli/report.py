"""`wenlan report`: a self-contained HTML page of a training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def report(
    run_dir: Annotated[Path, typer.Argument(help="A run directory (the --out folder of wenlan pretrain).")],
    output: Annotated[Optional[Path], Opt("--output", "-o", help="The HTML file to write (default: RUN_DIR/report.html).")] = None,
    examples: Annotated[int, Opt(help="Captions of the evaluation split shown with their top retrieved images (0: none).")] = 5,
    top_k: Annotated[int, Opt(help="Images shown per example caption.")] = 5,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N (for the examples).")] = "auto",
    batch_size: Annotated[int, Opt(help="Images per forward pass (for the examples).")] = 64,
    workers: Annotated[int, Opt(help="DataLoader worker processes decoding images.")] = 0,
) -> None:
    """Write a self-contained HTML report of a training run.

    One page about a run: loss, learning-rate and recall curves, the final
    recall table, the settings, and a few validation captions with the images the run's
    checkpoint retrieves for them. Everything is inside the file (images as data: URIs)."""
    from rich.console import Console

    from ..report import write_report
    from .options import check_inference_options

    if examples > 0:  # write_report checks --examples and --top-k themselves
        check_inference_options(device=device, batch_size=batch_size, workers=workers)
    err = Console(stderr=True)
    path = write_report(
        run_dir, output, examples=examples, top_k=top_k, device=device, batch_size=batch_size, workers=workers,
        log=lambda message: err.print(message, markup=False, soft_wrap=True),
    )
    err.print(f"Wrote {path}", markup=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
