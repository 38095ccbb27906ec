"""`wenlan data convert`: a dataset in any supported layout -> webdataset tar shards."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import option


@dataclass
class DataConvertConfig:
    """The options of `wenlan data convert` (and the keys of its `--config` file)."""

    src: Path = option(help="The dataset folder (or image folder with --from folder).", argument=True)
    out: Path = option(help="Folder to write the shards and index.json into (new, or an unfinished conversion to continue).", argument=True)
    source: str = option("aic-icc", "--from", help="Layout of SRC: aic-icc, brivl-jsonl, jsonl, csv, muge, flickr30k-cn, coco-cn, folder (images with optional same-name .txt captions) or synth (a `wenlan data synth` folder).")
    shard_size: int = option(1000, help="Samples per shard.")
    max_side: int | None = option(None, help="Re-encode images whose longer side exceeds this many pixels as JPEG at that size (boxes scaled); default: bytes copied as they are.")
    splits: str | None = option(None, help="Comma-separated splits to convert (default: whichever of train, val, test SRC has).")
    image_column: str | None = option(None, help="Image column of jsonl/csv data.")
    text_column: str | None = option(None, help="Text column of jsonl/csv data.")
    skip_bad: bool = option(False, "--skip-bad", help="Leave unreadable images out (counted in index.json) instead of failing.")


def _convert(call: Invocation, cfg: DataConvertConfig) -> None:
    """Write webdataset tar shards per split, resumably, with an index.json."""
    from rich.console import Console
    from ..engine.progress import counting_progress

    from ..config import check_number
    from ..data.convert import convert_dataset
    from ..output_paths import check_outputs, folder_input

    src, out, shard_size, max_side, splits = cfg.src, cfg.out, cfg.shard_size, cfg.max_side, cfg.splits
    check_number("--shard-size", shard_size, 1, 10_000_000, integer=True)
    if max_side is not None:
        check_number("--max-side", max_side, 16, 16384, integer=True)
    check_outputs([("OUT", out)], folder_input("SRC", src))
    chosen = [s.strip() for s in splits.split(",") if s.strip()] if splits else None
    options = {k: v for k, v in (("image_column", cfg.image_column), ("text_column", cfg.text_column)) if v}
    err = Console(stderr=True)
    with counting_progress("{task.description}", err) as progress:
        task = None

        def on_split(split: str, samples: int) -> None:
            nonlocal task
            task = progress.add_task(f"{split} shards", total=samples)

        index = convert_dataset(
            cfg.source, src, out, shard_size=shard_size, max_side=max_side, splits=chosen, skip_bad=cfg.skip_bad,
            reader_options=options, on_split=on_split, on_sample=lambda n: progress.advance(task, n),
            log=lambda message: progress.console.print(message, markup=False, highlight=False, soft_wrap=True),
        )
    for split, entry in index["splits"].items():
        skipped = f", {entry['skipped']} unreadable images left out" if entry.get("skipped") else ""
        typer.echo(f"{split}: {entry['samples']} samples in {len(entry['shards'])} shards{skipped}")
    typer.echo(f"Wrote {out / 'index.json'}; train on it with --dataset webdataset --data-dir {out}")


convert = declared_command(_convert, DataConvertConfig)


def register(app: typer.Typer) -> None:
    app.command("convert")(convert)
