"""`wenlan report`: a self-contained HTML page of a training run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import option


@dataclass
class ReportConfig:
    """The options of `wenlan report` (and the keys of its `--config` file)."""

    run_dir: Path = option(help="A run directory (the --out folder of wenlan pretrain).", argument=True)
    output: Path | None = option(None, "--output", "-o", help="The HTML file to write (default: RUN_DIR/report.html).")
    examples: int = option(5, help="Captions of the evaluation split shown with their top retrieved images (0: none).")
    top_k: int = option(5, help="Images shown per example caption.")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N (for the examples).")
    batch_size: int = option(64, help="Images per forward pass (for the examples).")
    workers: int = option(0, help="DataLoader worker processes decoding images.")


def _report(call: Invocation, cfg: ReportConfig) -> None:
    """Write a self-contained HTML report of a training run.

    One page about a run: loss, learning-rate and recall curves, the final
    recall table, the settings, and a few validation captions with the images the run's
    checkpoint retrieves for them. Everything is inside the file (images as data: URIs)."""
    from rich.console import Console

    from ..report import write_report
    from .options import check_inference_options

    if cfg.examples > 0:  # write_report checks --examples and --top-k themselves
        check_inference_options(device=cfg.device, batch_size=cfg.batch_size, workers=cfg.workers)
    err = Console(stderr=True)
    path = write_report(
        cfg.run_dir, cfg.output, examples=cfg.examples, top_k=cfg.top_k, device=cfg.device, batch_size=cfg.batch_size,
        workers=cfg.workers,
        log=lambda message: err.print(message, markup=False, soft_wrap=True),
    )
    err.print(f"Wrote {path}", markup=False, soft_wrap=True)


report = declared_command(_report, ReportConfig)


def register(app: typer.Typer) -> None:
    app.command("report")(report)
