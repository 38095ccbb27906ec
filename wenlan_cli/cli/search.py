"""`wenlan search`: text or image queries against an index made by `wenlan index`."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option


def search(
    queries: Annotated[Optional[list[str]], typer.Argument(help="Text queries (each one searched on its own).", show_default=False)] = None,
    index: Annotated[Path, Opt("--index", help="Index folder made by `wenlan index`.")] = ...,
    image: Annotated[Optional[list[Path]], Opt("--image", help="Search with this image instead of text (repeatable).", show_default=False)] = None,
    k: Annotated[int, Opt("-k", "--top-k", help="Results per query.")] = 10,
    as_json: Annotated[bool, Opt("--json", help="Print a JSON list (one object per query) instead of tables.")] = False,
    html_out: Annotated[Optional[Path], Opt("--html", help="Also write a self-contained HTML page with thumbnails.")] = None,
    use_faiss: Annotated[bool, Opt("--faiss", help="Search with faiss (IndexFlatIP) instead of the built-in exact search.")] = False,
    checkpoint: Annotated[Optional[str], Opt(help="Encode queries with this checkpoint instead of the index's own.")] = None,
    device: Annotated[str, Opt(help="auto, cpu, cuda or cuda:N.")] = "auto",
) -> None:
    """Search an index with Chinese text or with images.

    Finds the images of an index closest to Chinese text queries or to query images.
    Scores are cosine similarities; equal scores rank the earlier index row first."""
    from rich.console import Console
    from rich.table import Table

    from ..errors import UsageError
    from ..search.index import load_index
    from ..search.query import Searcher

    texts = list(queries or [])
    images = list(image or [])
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
    if as_json:
        sys.stdout.write(json.dumps([r.to_json() for r in results], ensure_ascii=False, indent=1) + "\n")
        return
    out = Console()
    for result in results:
        title = result.query if result.kind == "text" else f"image: {result.query}"
        table = Table(title=title, caption=f"in {searcher.index.images_dir}", title_justify="left", caption_justify="left")
        table.add_column("rank", justify="right")
        table.add_column("score", justify="right")
        table.add_column("path", overflow="fold")
        for hit in result.hits:
            table.add_row(str(hit.rank), f"{hit.score:.4f}", hit.path)
        out.print(table)


def register(app: typer.Typer) -> None:
    app.command("search")(search)
