"""`wenlan eval-retrieval`: Recall@1/5/10 both ways on a dataset split."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def eval_retrieval(
    checkpoint: Annotated[str, Opt(help="Checkpoint directory, or a run directory (its final, else latest, checkpoint).")],
    dataset: Annotated[str, Opt(help="synth, aic-icc, brivl-jsonl, jsonl, csv, or a Chinese-CLIP benchmark: muge, flickr30k-cn, coco-cn; webdataset for shards.")] = "synth",
    data_dir: Annotated[Optional[str], Opt(help="Folder with the data (synth: default is the cached copy).")] = None,
    split: Annotated[str, Opt(help="train, val or test (muge / flickr30k-cn / coco-cn: train, valid or test; val means valid).")] = "val",
    output: Annotated[Optional[Path], Opt("--output", "-o", help="Also write the metrics to this JSON file.")] = None,
    batch_size: Annotated[int, Opt(help="Images per forward pass.")] = 128,
    workers: Annotated[int, Opt(help="DataLoader worker processes decoding images.")] = 0,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
    precision: Annotated[str, Opt(help="fp32, bf16 or fp16 (GPU).")] = "fp32",
    chunk_size: Annotated[int, Opt(help="Queries scored at once (memory is chunk x candidates).")] = 1024,
    image_column: Annotated[Optional[str], Opt(help="Image column of jsonl/csv data.")] = None,
    text_column: Annotated[Optional[str], Opt(help="Text column of jsonl/csv data.")] = None,
    skip_bad: Annotated[bool, Opt("--skip-bad", help="Leave unreadable images (and their captions) out instead of failing; the metrics count them.")] = False,
) -> None:
    """Retrieval Recall@1/5/10, both ways, on a dataset split.

    Every caption is a text->image query with one gold
    image; an image is found at K when any of its captions ranks within K. In the
    Chinese-CLIP benchmarks a text may have several gold images and is found at K when
    any of them ranks within K (Chinese-CLIP's own rule)."""
    from rich.console import Console

    from ..data.sources import load_records
    from ..errors import UsageError
    from ..eval.evaluate import evaluate_retrieval, query_table
    from ..eval.retrieval import format_recall_table
    from ..loading import load_checkpoint
    from .options import check_file_output, check_inference_options

    dev = check_inference_options(device=device, precision=precision, batch_size=batch_size, workers=workers)
    check_file_output("--output", output)
    from ..output_paths import check_outputs, checkpoint_input, folder_input

    check_outputs([("--output", output)], [*checkpoint_input("--checkpoint", checkpoint), *folder_input("--data-dir", data_dir)])
    options = {k: v for k, v in (("image_column", image_column), ("text_column", text_column)) if v}
    records = load_records(dataset, data_dir, split, **options)
    if not records:
        raise UsageError(f"the {split} split of {dataset} has no images.")
    loaded = load_checkpoint(checkpoint, device=dev)
    err = Console(stderr=True)
    err.print(f"Evaluating {loaded.path} on {len(records):,} images / {len(query_table(records)[0]):,} texts ({dataset} {split}).")
    metrics = evaluate_retrieval(
        loaded.model, loaded.tokenizer, records, loaded.settings, device=dev,
        max_length=loaded.config.text.max_length, batch_size=batch_size, workers=workers,
        precision=precision, chunk_size=chunk_size, skip_bad=skip_bad,
    )
    for item in metrics.get("skipped", []):
        err.print(f"skipped {item['error']}", markup=False, highlight=False, soft_wrap=True)
    metrics = {"checkpoint": str(loaded.path), "dataset": dataset, "split": split, **metrics}
    Console().print(format_recall_table(metrics))
    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(metrics, indent=2, ensure_ascii=False), encoding="utf-8")
        err.print(f"Wrote {output}")


def register(app: typer.Typer) -> None:
    app.command("eval-retrieval")(eval_retrieval)
