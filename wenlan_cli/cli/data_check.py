"""`wenlan data check`: a dataset's problems in one table (or the full report as JSON)."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

Opt = typer.Option


def check(
    dataset: Annotated[str, Opt(help="synth, aic-icc, brivl-jsonl, jsonl, csv, muge, flickr30k-cn, coco-cn or webdataset.")] = "synth",
    data_dir: Annotated[Optional[str], Opt(help="Folder with the data (synth: default is the cached copy; webdataset: shards folder or pattern).")] = None,
    splits: Annotated[Optional[str], Opt(help="Comma-separated splits (default: whichever of train, val, test the data has).")] = None,
    model: Annotated[str, Opt(help="Architecture whose caption length limit applies.")] = "brivl-base",
    max_length: Annotated[Optional[int], Opt(help="Caption length limit in tokens ([CLS] and [SEP] included); default: --model's, or the checkpoint's.")] = None,
    checkpoint: Annotated[Optional[str], Opt(help="Count tokens with this checkpoint's tokenizer and limit (default: the character vocabulary of these captions).")] = None,
    decode: Annotated[bool, Opt("--decode", help="Also decode every image (slower; finds corrupt pixel data the header and end checks miss).")] = False,
    image_column: Annotated[Optional[str], Opt(help="Image column of jsonl/csv data.")] = None,
    text_column: Annotated[Optional[str], Opt(help="Text column of jsonl/csv data.")] = None,
    as_json: Annotated[bool, Opt("--json", help="Print the full report (every finding) as JSON instead of the table.")] = False,
    strict: Annotated[bool, Opt("--strict", help="Exit with status 1 when anything is found.")] = False,
) -> None:
    """Find unreadable or truncated images, empty or over-long captions, duplicate images,
    images shared between splits and boxes outside their image."""
    from rich.console import Console
    from ..engine.progress import counting_progress
    from rich.table import Table

    from ..config import check_number
    from ..data.check import CHECK_TITLES, CHECKS, check_dataset
    from ..models.tokenizer import char_tokenizer

    check_number("--max-length", max_length, 2, 100_000, integer=True)
    tokenizer = None
    if checkpoint is not None:
        from ..models.tokenizer import load_tokenizer
        from ..engine.checkpoint import model_config_of, resolve_checkpoint

        path = resolve_checkpoint(checkpoint)
        tokenizer = load_tokenizer(path)
        limit = max_length or model_config_of(path).text.max_length
    else:
        from ..models.registry import get_model_config

        limit = max_length or get_model_config(model).text.max_length
    chosen = [s.strip() for s in splits.split(",") if s.strip()] if splits else None
    options = {k: v for k, v in (("image_column", image_column), ("text_column", text_column)) if v}
    err = Console(stderr=True)
    with counting_progress("{task.description}", err) as progress:
        task = None

        def on_split(split: str, count: int) -> None:
            nonlocal task
            task = progress.add_task(f"checking {split}", total=count)

        report = check_dataset(dataset, data_dir, splits=chosen, tokenizer=tokenizer, char_tokenizer=char_tokenizer, max_length=limit, decode=decode,
                               reader_options=options, on_split=on_split, progress=lambda n: progress.advance(task, n))
    if as_json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        for split, why in report["not_read"].items():
            err.print(f"{split}: not read ({why})", markup=False, highlight=False, soft_wrap=True)
        names = list(report["splits"])
        table = Table(title=f"{dataset} {data_dir or ''}".strip())
        table.add_column("check")
        for split in names:
            table.add_column(split, justify="right")
        table.add_row("images", *(f"{report['splits'][s]['images']:,}" for s in names))
        table.add_row("captions", *(f"{report['splits'][s]['captions']:,}" for s in names))
        for name in CHECKS:
            title = CHECK_TITLES[name] + (f" (> {limit} tokens)" if name == "long_captions" else "")
            table.add_row(title, *(_cell(report["splits"][s]["counts"][name]) for s in names))
        Console().print(table)
        for pair, items in report["leakage"].items():
            Console().print(f"[red]{len(items):,} images shared between {pair}[/red], e.g. {items[0]}", highlight=False)
        for split in names:
            for name in CHECKS:
                items = report["splits"][split]["findings"][name]
                if items:
                    Console().print(f"{split}, {CHECK_TITLES[name]}: e.g. {items[0]}", markup=False, highlight=False, soft_wrap=True)
        verdict = "nothing found" if report["problems"] == 0 else f"{report['problems']:,} findings (--json lists them all)"
        Console().print(verdict)
    if strict and report["problems"]:
        raise typer.Exit(1)


def _cell(count: int) -> str:
    return "0" if count == 0 else f"[red]{count:,}[/red]"


def register(app: typer.Typer) -> None:
    app.command("check")(check)
