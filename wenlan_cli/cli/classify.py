"""`wenlan classify`: zero-shot labels for images, or accuracy on a labelled folder."""

from __future__ import annotations

import csv
import io
import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option

PREDICTION_COLUMNS = ["path", "rank", "label", "score", "probability"]
ACCURACY_COLUMNS = ["label", "images", "top1_correct", "top5_correct", "top1", "top5"]


def _write(path: Path, text: str) -> None:
    """Write `text` to `path`, or to stdout for "-"."""
    if str(path) == "-":
        sys.stdout.write(text)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def _csv_text(columns: list[str], rows: list[list]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows(rows)
    return buffer.getvalue()


def classify(
    images: Annotated[list[Path], typer.Argument(help="Image files or folders (searched recursively); with --eval, one folder with a sub-folder per label.", show_default=False)],
    checkpoint: Annotated[str, Opt(help="Checkpoint directory, or a run directory.")] = ...,
    labels: Annotated[Optional[Path], Opt(help="UTF-8 file with one label per line (with --eval, default: the sub-folder names).")] = None,
    template: Annotated[Optional[list[str]], Opt("--template", help='Prompt with {} for the label, e.g. "一张{}的照片" (repeatable; several are averaged). Default: a small built-in set.', show_default=False)] = None,
    k: Annotated[int, Opt("-k", "--top-k", help="Labels to report per image.")] = 5,
    csv_out: Annotated[Optional[Path], Opt("--csv", help="Write the predictions (with --eval: the accuracy per class) as CSV; - for stdout.")] = None,
    json_out: Annotated[Optional[Path], Opt("--json", help="Write the predictions (with --eval: the accuracy report) as JSON; - for stdout.")] = None,
    evaluate: Annotated[bool, Opt("--eval", help="Images sit in folders named after their labels: report top-1/top-5 accuracy.")] = False,
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images out instead of failing.")] = False,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 64,
    workers: Annotated[Optional[int], Opt(help="DataLoader processes decoding images (default: up to 4).")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16 or fp16 (GPU).")] = "fp32",
) -> None:
    """Zero-shot classification of images against labels.

    Scores each image against every label (prompt-ensembled
    text vectors) and report the top-k labels, or accuracy with --eval."""
    import os

    from rich.console import Console
    from ..engine.progress import counting_progress
    from rich.table import Table

    from .. import classify as zs
    from ..api import load
    from ..encode import collect_image_paths
    from ..errors import DataError, UsageError
    from .options import check_file_output, check_inference_options

    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}.")
    dev = check_inference_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    check_file_output("--csv", csv_out)
    check_file_output("--json", json_out)
    if csv_out is not None and json_out is not None and str(csv_out) == "-" and str(json_out) == "-":
        raise UsageError("--csv - and --json - cannot both write to stdout.")
    from ..output_paths import check_outputs, checkpoint_input, file_input, path_input

    check_outputs(
        [("--csv", csv_out), ("--json", json_out)],
        [*(i for p in images for i in path_input("IMAGES", p)), *file_input("--labels", labels),
         *checkpoint_input("--checkpoint", checkpoint)],
    )
    templates = zs.check_templates(template)
    if evaluate:
        if len(images) != 1 or not images[0].is_dir():
            raise UsageError("--eval takes one folder holding a sub-folder of images per label.")
        root = images[0]
    elif labels is None:
        raise UsageError("give --labels FILE (one label per line).")
    paths = collect_image_paths(images)
    if not paths:
        raise DataError(f"no images (jpg, png, webp, bmp) found in {', '.join(map(str, images))}.")
    if evaluate:
        gold_all = zs.folder_labels(root, paths)
        label_list = zs.read_labels(labels) if labels is not None else sorted(set(gold_all))
    else:
        label_list = zs.read_labels(labels)

    err = Console(stderr=True)
    model, _, _ = load(checkpoint, device=dev)
    vectors = zs.label_embeddings(model, label_list, templates)
    n_workers = min(4, max(0, (os.cpu_count() or 1) - 1)) if workers is None else workers
    progress = counting_progress("classifying", err)
    with progress:
        task = progress.add_task("classify", total=len(paths))
        result = zs.classify(
            model, paths, label_list, k=k, label_vectors=vectors, batch_size=batch_size, workers=n_workers,
            skip_bad=skip_bad, precision=precision, on_batch=lambda n: progress.advance(task, n),
        )
    for path, message in result.failures:
        err.print(f"skipped {message}", markup=False, highlight=False)
    to_stdout = "-" in (str(csv_out), str(json_out))

    if evaluate:
        kept = {p: g for p, g in zip(paths, gold_all)}
        report = zs.evaluate(result, [kept[p] for p in result.paths])
        report["templates"] = templates
        if csv_out is not None:
            rows = [[c[col] for col in ACCURACY_COLUMNS] for c in report["per_class"]]
            rows.append(["(all)", report["images"], report["top1_correct"], report["top5_correct"], report["top1"], report["top5"]])
            _write(csv_out, _csv_text(ACCURACY_COLUMNS, rows))
        if json_out is not None:
            _write(json_out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
        if not to_stdout:
            table = Table(title="Zero-shot accuracy (%)", caption=f"{len(label_list)} labels, {len(templates)} templates")
            for col, justify in zip(ACCURACY_COLUMNS, ["left"] + ["right"] * 5):
                table.add_column(col.replace("_", " "), justify=justify)
            for c in report["per_class"]:
                table.add_row(c["label"], str(c["images"]), str(c["top1_correct"]), str(c["top5_correct"]),
                              f"{c['top1']:.2f}", f"{c['top5']:.2f}")
            table.add_row("all", str(report["images"]), str(report["top1_correct"]), str(report["top5_correct"]),
                          f"{report['top1']:.2f}", f"{report['top5']:.2f}", style="bold")
            Console().print(table)
        err.print(f"top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  over {report['images']} images",
                  markup=False, highlight=False)
        return

    top = result.top()
    if csv_out is not None:
        rows = [[str(p), r, label, f"{s:.6f}", f"{prob:.6f}"]
                for p, preds in zip(result.paths, top) for r, (label, s, prob) in enumerate(preds, 1)]
        _write(csv_out, _csv_text(PREDICTION_COLUMNS, rows))
    if json_out is not None:
        items = [{"path": str(p), "predictions": [{"rank": r, "label": label, "score": s, "probability": prob}
                                                   for r, (label, s, prob) in enumerate(preds, 1)]}
                 for p, preds in zip(result.paths, top)]
        _write(json_out, json.dumps(items, ensure_ascii=False, indent=1) + "\n")
    for written in (csv_out, json_out):
        if written is not None and str(written) != "-":
            err.print(f"Wrote {written}", markup=False, highlight=False)
    if csv_out is None and json_out is None:
        width = len(top[0]) if top else 0
        table = Table(title="Zero-shot labels (cosine score)", caption=f"{len(label_list)} labels, {len(templates)} templates")
        table.add_column("image", overflow="fold")
        for r in range(1, width + 1):
            table.add_column(f"#{r}")
        for p, preds in zip(result.paths, top):
            table.add_row(str(p), *(f"{label} {s:.3f}" for label, s, _ in preds))
        Console().print(table)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
