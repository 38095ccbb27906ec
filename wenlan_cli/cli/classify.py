"""`wenlan classify`: zero-shot labels for images, or accuracy on a labelled folder."""

from __future__ import annotations

import csv
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, inference_workers_option, option, precision_option


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


@dataclass(kw_only=True)  # IMAGES and --checkpoint are required, the rest optional
class ClassifyConfig:
    """The options of `wenlan classify` (and the keys of its `--config` file)."""

    images: list[Path] = option(help="Image files or folders (searched recursively); with --eval, one folder with a sub-folder per label.", argument=True)
    checkpoint: str = option(help="Checkpoint directory, or a run directory.")
    labels: Path | None = option(None, help="UTF-8 file with one label per line (with --eval, default: the sub-folder names).")
    template: list[str] | None = option(None, "--template", help='Prompt with {} for the label, e.g. "一张{}的照片" (repeatable; several are averaged). Default: a small built-in set.')
    top_k: int = option(5, "-k", "--top-k", help="Labels to report per image.")
    csv: Path | None = option(None, "--csv", help="Write the predictions (with --eval: the accuracy per class) as CSV; - for stdout.")
    json: Path | None = option(None, "--json", help="Write the predictions (with --eval: the accuracy report) as JSON; - for stdout.")
    eval: bool = option(False, "--eval", help="Images sit in folders named after their labels: report top-1/top-5 accuracy.")
    skip_bad: bool = option(False, "--skip-bad", help="Leave unreadable images out instead of failing.")
    batch_size: int = option(64, help="Images per forward pass.")
    workers: int | None = inference_workers_option()
    device: str = device_option()
    precision: str = precision_option()


def _classify_command(call: Invocation, cfg: ClassifyConfig) -> None:
    """Zero-shot classification of images against labels.

    Scores each image against every label (prompt-ensembled
    text vectors) and report the top-k labels, or accuracy with --eval."""
    from rich.console import Console

    from .. import classify as zs
    from ..api import load
    from .options import inference_workers

    images, checkpoint, labels, k, csv_out, json_out = cfg.images, cfg.checkpoint, cfg.labels, cfg.top_k, cfg.csv, cfg.json
    evaluate, batch_size, workers, precision = cfg.eval, cfg.batch_size, cfg.workers, cfg.precision
    dev = _check_options(images, checkpoint, labels, k, csv_out, json_out, device=cfg.device, precision=precision,
                         batch_size=batch_size, workers=workers)
    templates = zs.check_templates(cfg.template)
    inputs = zs.classification_inputs(images, labels, evaluate)
    err = Console(stderr=True)
    model, _, _ = load(checkpoint, device=dev)
    result = _classify(model, inputs, templates, err, k=k, batch_size=batch_size, workers=inference_workers(workers),
                       skip_bad=cfg.skip_bad, precision=precision)
    for path, message in result.failures:
        err.print(f"skipped {message}", markup=False, highlight=False)
    if evaluate:
        _report_accuracy(result, inputs, templates, csv_out, json_out, err)
    else:
        _report_predictions(result, inputs.labels, templates, csv_out, json_out, err)


def _check_options(images, checkpoint, labels, k, csv_out, json_out, **inference):
    """Every option checked before the model loads; returns the torch device."""
    from ..errors import UsageError
    from ..output_paths import check_outputs, checkpoint_input, file_input, path_input
    from .options import check_file_output, check_inference_options

    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}.")
    dev = check_inference_options(**inference)
    check_file_output("--csv", csv_out)
    check_file_output("--json", json_out)
    if csv_out is not None and json_out is not None and str(csv_out) == "-" and str(json_out) == "-":
        raise UsageError("--csv - and --json - cannot both write to stdout.")
    check_outputs(
        [("--csv", csv_out), ("--json", json_out)],
        [*(i for p in images for i in path_input("IMAGES", p)), *file_input("--labels", labels),
         *checkpoint_input("--checkpoint", checkpoint)],
    )
    return dev


def _classify(model, inputs, templates, err, **options):
    """The classification with a progress bar on stderr."""
    from .. import classify as zs
    from ..engine.progress import counting_progress

    vectors = zs.label_embeddings(model, inputs.labels, templates)
    progress = counting_progress("classifying", err)
    with progress:
        task = progress.add_task("classify", total=len(inputs.paths))
        return zs.classify(model, inputs.paths, inputs.labels, label_vectors=vectors,
                           on_batch=lambda n: progress.advance(task, n), **options)


def _report_accuracy(result, inputs, templates, csv_out, json_out, err) -> None:
    """--eval: the accuracy report to --csv / --json, a table unless one of them is stdout."""
    from rich.console import Console
    from rich.table import Table

    from .. import classify as zs

    report = zs.evaluate(result, inputs.gold_of(result.paths))
    report["templates"] = templates
    if csv_out is not None:
        _write(csv_out, _csv_text(zs.ACCURACY_COLUMNS, zs.accuracy_rows(report)))
    if json_out is not None:
        _write(json_out, json.dumps(report, ensure_ascii=False, indent=1) + "\n")
    if "-" not in (str(csv_out), str(json_out)):
        table = Table(title="Zero-shot accuracy (%)", caption=f"{len(inputs.labels)} labels, {len(templates)} templates")
        for col, justify in zip(zs.ACCURACY_COLUMNS, ["left"] + ["right"] * 5):
            table.add_column(col.replace("_", " "), justify=justify)
        rows = zs.accuracy_rows(report)
        for i, (label, images, top1_correct, top5_correct, top1, top5) in enumerate(rows):
            total = i == len(rows) - 1  # the last row is all classes together
            table.add_row("all" if total else label, str(images), str(top1_correct), str(top5_correct),
                          f"{top1:.2f}", f"{top5:.2f}", style="bold" if total else None)
        Console().print(table)
    err.print(f"top-1 {report['top1']:.2f}%  top-5 {report['top5']:.2f}%  over {report['images']} images",
              markup=False, highlight=False)


def _report_predictions(result, labels, templates, csv_out, json_out, err) -> None:
    """The top-k labels to --csv / --json, or as a table when neither is given."""
    from rich.console import Console
    from rich.table import Table

    from .. import classify as zs

    if csv_out is not None:
        _write(csv_out, _csv_text(zs.PREDICTION_COLUMNS, zs.prediction_rows(result)))
    if json_out is not None:
        _write(json_out, json.dumps(zs.prediction_items(result), ensure_ascii=False, indent=1) + "\n")
    for written in (csv_out, json_out):
        if written is not None and str(written) != "-":
            err.print(f"Wrote {written}", markup=False, highlight=False)
    if csv_out is None and json_out is None:
        top = result.top()
        table = Table(title="Zero-shot labels (cosine score)", caption=f"{len(labels)} labels, {len(templates)} templates")
        table.add_column("image", overflow="fold")
        for r in range(1, (len(top[0]) if top else 0) + 1):
            table.add_column(f"#{r}")
        for p, preds in zip(result.paths, top):
            table.add_row(str(p), *(f"{label} {s:.3f}" for label, s, _ in preds))
        Console().print(table)


classify = declared_command(_classify_command, ClassifyConfig)


def register(app: typer.Typer) -> None:
    app.command("classify")(classify)
