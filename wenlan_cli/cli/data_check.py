"""`wenlan data check`: a dataset's problems in one table (or the full report as JSON)."""

from __future__ import annotations

import json
from dataclasses import dataclass

import typer

from ..declared import Invocation, declared_command
from ..option_spec import option


@dataclass
class DataCheckConfig:
    """The options of `wenlan data check` (and the keys of its `--config` file)."""

    dataset: str = option("synth", help="synth, aic-icc, brivl-jsonl, jsonl, csv, muge, flickr30k-cn, coco-cn or webdataset.")
    data_dir: str | None = option(None, help="Folder with the data (synth: default is the cached copy; webdataset: shards folder or pattern).")
    splits: str | None = option(None, help="Comma-separated splits (default: whichever of train, val, test the data has).")
    model: str = option("brivl-base", help="Architecture whose caption length limit applies.")
    max_length: int | None = option(None, help="Caption length limit in tokens ([CLS] and [SEP] included); default: --model's, or the checkpoint's.")
    checkpoint: str | None = option(None, help="Count tokens with this checkpoint's tokenizer and limit (default: the character vocabulary of these captions).")
    decode: bool = option(False, "--decode", help="Also decode every image (slower; finds corrupt pixel data the header and end checks miss).")
    image_column: str | None = option(None, help="Image column of jsonl/csv data.")
    text_column: str | None = option(None, help="Text column of jsonl/csv data.")
    json: bool = option(False, "--json", help="Print the full report (every finding) as JSON instead of the table.")
    strict: bool = option(False, "--strict", help="Exit with status 1 when anything is found.")


def _check(call: Invocation, cfg: DataCheckConfig) -> None:
    """Find unreadable or truncated images, empty or over-long captions, duplicate images,
    images shared between splits and boxes outside their image."""
    from rich.console import Console

    from ..data.check import check_dataset
    from ..engine.progress import counting_progress
    from ..models.tokenizer import char_tokenizer

    tokenizer, limit = _tokenizer_and_limit(cfg)
    chosen = [s.strip() for s in cfg.splits.split(",") if s.strip()] if cfg.splits else None
    options = {k: v for k, v in (("image_column", cfg.image_column), ("text_column", cfg.text_column)) if v}
    err = Console(stderr=True)
    with counting_progress("{task.description}", err) as progress:
        task = None

        def on_split(split: str, count: int) -> None:
            nonlocal task
            task = progress.add_task(f"checking {split}", total=count)

        report = check_dataset(cfg.dataset, cfg.data_dir, splits=chosen, tokenizer=tokenizer, char_tokenizer=char_tokenizer, max_length=limit, decode=cfg.decode,
                               reader_options=options, on_split=on_split, progress=lambda n: progress.advance(task, n))
    if cfg.json:
        typer.echo(json.dumps(report, ensure_ascii=False, indent=2))
    else:
        _print_report(report, cfg, limit, err)
    if cfg.strict and report["problems"]:
        raise typer.Exit(1)


def _tokenizer_and_limit(cfg: DataCheckConfig):
    """The tokenizer that counts caption tokens (None: the captions' characters) and the limit."""
    from ..config import check_number

    check_number("--max-length", cfg.max_length, 2, 100_000, integer=True)
    if cfg.checkpoint is not None:
        from ..engine.checkpoint import model_config_of, resolve_checkpoint
        from ..models.tokenizer import load_tokenizer

        path = resolve_checkpoint(cfg.checkpoint)
        return load_tokenizer(path), cfg.max_length or model_config_of(path).text.max_length
    from ..models.registry import get_model_config

    return None, cfg.max_length or get_model_config(cfg.model).text.max_length


def _print_report(report: dict, cfg: DataCheckConfig, limit: int, err) -> None:
    """The counts per split and check in a table, then an example of each finding."""
    from rich.console import Console
    from rich.table import Table

    from ..data.check import CHECK_TITLES, CHECKS

    for split, why in report["not_read"].items():
        err.print(f"{split}: not read ({why})", markup=False, highlight=False, soft_wrap=True)
    names = list(report["splits"])
    table = Table(title=f"{cfg.dataset} {cfg.data_dir or ''}".strip())
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


check = declared_command(_check, DataCheckConfig)


def _cell(count: int) -> str:
    return "0" if count == 0 else f"[red]{count:,}[/red]"


def register(app: typer.Typer) -> None:
    app.command("check")(check)
