"""`wenlan eval-retrieval`: Recall@1/5/10 both ways on a dataset split."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, option, precision_option


@dataclass
class EvalRetrievalConfig:
    """The options of `wenlan eval-retrieval` (and the keys of its `--config` file)."""

    checkpoint: str = option(help="Checkpoint directory, or a run directory (its final, else latest, checkpoint).")
    dataset: str = option("synth", help="synth, aic-icc, brivl-jsonl, jsonl, csv, or a Chinese-CLIP benchmark: muge, flickr30k-cn, coco-cn; webdataset for shards.")
    data_dir: str | None = option(None, help="Folder with the data (synth: default is the cached copy).")
    split: str = option("val", help="train, val or test (muge / flickr30k-cn / coco-cn: train, valid or test; val means valid).")
    output: Path | None = option(None, "--output", "-o", help="Also write the metrics to this JSON file.")
    batch_size: int = option(128, help="Images per forward pass.")
    workers: int = option(0, help="DataLoader worker processes decoding images.")
    device: str = device_option()
    precision: str = precision_option()
    chunk_size: int = option(1024, help="Queries scored at once (memory is chunk x candidates).")
    image_column: str | None = option(None, help="Image column of jsonl/csv data.")
    text_column: str | None = option(None, help="Text column of jsonl/csv data.")
    skip_bad: bool = option(False, "--skip-bad", help="Leave unreadable images (and their captions) out instead of failing; the metrics count them.")


def _eval_retrieval(call: Invocation, cfg: EvalRetrievalConfig) -> None:
    """Retrieval Recall@1/5/10, both ways, on a dataset split.

    Every caption is a text->image query with one gold
    image; an image is found at K when any of its captions ranks within K. In the
    Chinese-CLIP benchmarks a text may have several gold images and is found at K when
    any of them ranks within K (Chinese-CLIP's own rule)."""
    from rich.console import Console

    from ..data.sources import check_dataset_options, load_records
    from ..engine.checkpoint import resolve_checkpoint
    from ..errors import UsageError
    from ..eval.evaluate import evaluate_retrieval, query_table
    from ..eval.retrieval import format_recall_table
    from ..loading import load_checkpoint
    from .options import check_file_output, check_inference_options

    checkpoint, dataset, data_dir, split = cfg.checkpoint, cfg.dataset, cfg.data_dir, cfg.split
    batch_size, workers, device, precision = cfg.batch_size, cfg.workers, cfg.device, cfg.precision
    output = cfg.output
    dev = check_inference_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    check_file_output("--output", output)
    from ..output_paths import check_outputs, checkpoint_input, folder_input

    check_outputs([("--output", output)], [*checkpoint_input("--checkpoint", checkpoint), *folder_input("--data-dir", data_dir)])
    check_dataset_options(dataset, data_dir)
    resolve_checkpoint(checkpoint)  # a missing checkpoint is named before any data is read or generated
    options = {k: v for k, v in (("image_column", cfg.image_column), ("text_column", cfg.text_column)) if v}
    records = load_records(dataset, data_dir, split, **options)
    if not records:
        raise UsageError(f"the {split} split of {dataset} has no images.")
    loaded = load_checkpoint(checkpoint, device=dev)
    err = Console(stderr=True)
    err.print(f"Evaluating {loaded.path} on {len(records):,} images / {len(query_table(records)[0]):,} texts ({dataset} {split}).")
    metrics = evaluate_retrieval(
        loaded.model, loaded.tokenizer, records, loaded.settings, device=dev,
        max_length=loaded.config.text.max_length, batch_size=batch_size, workers=workers,
        precision=precision, chunk_size=cfg.chunk_size, skip_bad=cfg.skip_bad,
    )
    for item in metrics.get("skipped", []):
        err.print(f"skipped {item['error']}", markup=False, highlight=False, soft_wrap=True)
    metrics = {"checkpoint": str(loaded.path), "dataset": dataset, "split": split, **metrics}
    Console().print(format_recall_table(metrics))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        err.print(f"Wrote {output}")


eval_retrieval = declared_command(_eval_retrieval, EvalRetrievalConfig)


def register(app: typer.Typer) -> None:
    app.command("eval-retrieval")(eval_retrieval)
