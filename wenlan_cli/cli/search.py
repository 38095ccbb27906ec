"""`wenlan search`: text or image queries against an index made by `wenlan index`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, option


@dataclass(kw_only=True)  # --index is required, QUERIES optional
class SearchConfig:
    """The options of `wenlan search` (and the keys of its `--config` file)."""

    queries: list[str] | None = option(None, help="Text queries (each one searched on its own).", argument=True)
    index: Path = option(help="Index folder made by `wenlan index`.", flags=("--index",))
    image: list[Path] | None = option(None, "--image", help="Search with this image instead of text (repeatable).")
    top_k: int = option(10, "-k", "--top-k", help="Results per query.")
    json: bool = option(False, "--json", help="Print a JSON list (one object per query) instead of tables.")
    html: Path | None = option(None, "--html", help="Also write a self-contained HTML page with thumbnails.")
    faiss: bool = option(False, "--faiss", help="Search with faiss (IndexFlatIP) instead of the built-in exact search.")
    checkpoint: str | None = option(None, help="Encode queries with this checkpoint instead of the index's own.")
    device: str = device_option()


def _search(call: Invocation, cfg: SearchConfig) -> None:
    """Search an index with Chinese text or with images.

    Finds the images of an index closest to Chinese text queries or to query images.
    Scores are cosine similarities; equal scores rank the earlier index row first."""
    from rich.console import Console

    from ..errors import UsageError
    from ..search.index import load_index
    from ..search.query import Searcher

    texts, images, index, checkpoint, device = list(cfg.queries or []), list(cfg.image or []), cfg.index, cfg.checkpoint, cfg.device
    k, html_out, use_faiss = cfg.top_k, cfg.html, cfg.faiss
    if not texts and not images:
        raise UsageError('give a text query (wenlan search "红色的汽车" --index DIR) or --image FILE.')
    if k < 1:
        raise UsageError(f"-k must be at least 1, not {k}.")
    from .options import check_inference_options

    check_inference_options(device=device)
    from ..output_paths import check_outputs, checkpoint_input, file_input, folder_input
    from ..search.index import recorded_images_dir

    check_outputs(
        [("--html", html_out)],
        [*folder_input("--index", index), *folder_input("the index's images folder", recorded_images_dir(index)),
         *(i for p in images for i in file_input("--image", p)), *checkpoint_input("--checkpoint", checkpoint)],
    )
    err = Console(stderr=True)
    if use_faiss:
        from ..search.topk import require_faiss

        require_faiss()  # fail before loading anything
    searcher = Searcher(load_index(index), checkpoint=checkpoint, device=device)
    for warning in searcher.warnings:
        err.print(f"warning: {warning}", markup=False, highlight=False)
    results = searcher.search(texts, images, k, use_faiss=use_faiss)
    if html_out is not None:
        from ..search.html import write_html

        write_html(results, html_out, title=f"wenlan search: {index}")
        err.print(f"Wrote {html_out}", markup=False, highlight=False)
    if cfg.json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=1) + "\n")
        return
    _print_tables(results, searcher.index.images_dir)


def _print_tables(results, images_dir) -> None:
    """One table of ranked hits per query."""
    from rich.console import Console
    from rich.table import Table

    out = Console()
    for result in results:
        title = result.query if result.kind == "text" else f"image: {result.query}"
        table = Table(title=title, caption=f"in {images_dir}", title_justify="left", caption_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for hit in result.hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.path)
        out.print(table)


search = declared_command(_search, SearchConfig)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
