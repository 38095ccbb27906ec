"""A self-contained HTML page of search results: thumbnails embedded as base64 JPEGs."""

from __future__ import annotations

import base64
import html
import io
import os
from collections.abc import Sequence
from pathlib import Path

from .query import QueryResult

__all__ = ["render_html", "thumbnail_data_uri", "write_html"]

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; color: #222; }
h2 { margin: 1.2em 0 0.4em; font-size: 1.1em; }
.query img { max-height: 96px; vertical-align: middle; margin-left: 0.5em; }
.hits { display: flex; flex-wrap: wrap; gap: 10px; }
figure { margin: 0; width: %(size)dpx; font-size: 0.75em; }
figure img { display: block; max-width: %(size)dpx; max-height: %(size)dpx; }
figcaption { word-break: break-all; }
.missing { width: %(size)dpx; height: %(size)dpx; background: #eee; display: flex;
           align-items: center; justify-content: center; color: #888; }
"""


def thumbnail_data_uri(path: str | Path, size: int = 160) -> str | None:
    """A `data:image/jpeg;base64,...` thumbnail (longest side `size`), or None if unreadable."""
    from PIL import Image

    from ..data.images import load_image
    from ..errors import DataError

    try:
        image = load_image(Path(path))
    except DataError:
        return None
    image.thumbnail((size, size), Image.BILINEAR)
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(uri: str | None, caption: str, size: int) -> str:
    picture = f'<img src="{uri}" alt="">' if uri else '<div class="missing">unreadable</div>'
    return f"<figure>{picture}<figcaption>{caption}</figcaption></figure>"


def render_html(results: Sequence[QueryResult], title: str = "wenlan search", size: int = 160) -> str:
    """The page as a string; one section per query, best hit first."""
    cache: dict[Path, str | None] = {}

    def thumb(path: Path) -> str | None:
        if path not in cache:
            cache[path] = thumbnail_data_uri(path, size)
        return cache[path]

    parts = [
        "<!DOCTYPE html>",
        '<html lang="zh"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title>",
        f"<style>{_STYLE % {'size': size}}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    for result in results:
        heading = html.escape(result.query)
        if result.kind == "image":
            uri = thumb(Path(result.query))
            heading = f"image: {heading}" + (f'<img src="{uri}" alt="">' if uri else "")
        parts.append(f'<section><h2 class="query">{heading}</h2><div class="hits">')
        for hit in result.hits:
            caption = f"#{hit.rank} &nbsp; {hit.score:.3f}<br>{html.escape(hit.path)}"
            parts.append(_figure(thumb(hit.file), caption, size))
        if not result.hits:
            parts.append("<p>no results</p>")
        parts.append("</div></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def write_html(results: Sequence[QueryResult], path: str | Path, title: str = "wenlan search", size: int = 160) -> Path:
    """Write the page (to a temporary file, then renamed into place; the temporary file
    is removed on every failure, e.g. when `path` is a folder).

    Raises UsageError when `path` is an existing folder."""
    from ..errors import UsageError

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--html {path} is a folder; give a file name such as results.html.")
    page = render_html(results, title, size)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        temporary.write_text(page, encoding="utf-8")
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return path
