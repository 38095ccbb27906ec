"""`wenlan zeroshot-accuracy`: parse options, call `accuracy.folder_accuracy`, print.

Errors are the core's (`UsageError` and friends from the plugin surface): the core's
command line prints them as one sentence with exit code 2 (bad usage) or 1 (a failed run).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def zeroshot_accuracy(
    data_dir: Annotated[Path, typer.Argument(help="Folder with one sub-folder of images per label (the folder name is the label).", show_default=False)],
    checkpoint: Annotated[str, Opt(help="Checkpoint directory, or a run directory.")] = ...,
    template: Annotated[Optional[list[str]], Opt("--template", help='Prompt with {} for the label (repeatable). Default: the core\'s built-in set.', show_default=False)] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="Also write the report as JSON; - for stdout (then no table).")] = None,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 64,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images out instead of failing.")] = False,
) -> None:
    """Zero-shot top-1 / top-5 accuracy on a folder-per-label image set.

    The labels are the sub-folder names; prints the accuracy per class, overall and the
    mean over classes (percent)."""
    from rich.console import Console

    from wenlan_cli.plugin_api import check_number, check_outputs, checkpoint_input, counting_progress, load, pick_device

    from .accuracy import folder_accuracy, labelled_images

    check_number("--batch-size", batch_size, 1, integer=True)
    check_outputs([("--json", None if str(json_out) == "-" else json_out)], checkpoint_input("--checkpoint", checkpoint))
    images = len(labelled_images(data_dir)[0])  # a bad folder fails before the model loads
    model, _, _ = load(checkpoint, device=pick_device(device))
    err = Console(stderr=True)
    progress = counting_progress("classifying", err)
    with progress:
        task = progress.add_task("classify", total=images)
        report = folder_accuracy(model, data_dir, templates=template, batch_size=batch_size, skip_bad=skip_bad,
                                 on_batch=lambda n: progress.advance(task, n))
    for skipped in report["skipped"]:
        err.print(f"skipped {skipped['error']}", markup=False, highlight=False)
    if json_out is not None:
        _write_json(json_out, report)
    if str(json_out) != "-":
        Console().print(accuracy_table(report))


def accuracy_table(report: dict):
    """A rich table: one row per class, then all images and the mean over classes."""
    from rich.table import Table

    table = Table(title="Zero-shot accuracy (%)", caption=f"{report['labels']} labels, {len(report['templates'])} templates")
    for column, justify in (("label", "left"), ("images", "right"), ("top-1", "right"), ("top-5", "right")):
        table.add_column(column, justify=justify)
    for c in report["per_class"]:
        table.add_row(c["label"], str(c["images"]), f"{c['top1']:.2f}", f"{c['top5']:.2f}")
    table.add_row("all", str(report["images"]), f"{report['top1']:.2f}", f"{report['top5']:.2f}", style="bold")
    table.add_row("mean over classes", "", f"{report['mean_class_top1']:.2f}", "")
    return table


def _write_json(path: Path, report: dict) -> None:
    text = json.dumps(report, ensure_ascii=False, indent=1) + "\n"
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
