"""Read JSON annotation files with the `datasets` library, quietly and without caches.

The JSON readers parse their file through `datasets` (into Arrow columns), but a
reader of a 1 MB annotation file should neither take seconds nor leave cache
folders behind, least of all in the user's data folder. So this module:

* streams (`load_dataset(..., streaming=True)`): no Arrow cache is written;
  the builder's lock file and any cache go to a private temporary folder
  that is removed afterwards;
* hands `datasets` a symlink with a plain name in that temporary folder, so
  a data path with glob characters (``[``, ``*``) or fsspec syntax (``::``)
  is read as the file it is (datasets treats `data_files` as patterns);
* reads a JSON file in one chunk, so the schema is inferred from the whole
  file (datasets otherwise infers it from the first 10 MB and fails on a
  column that first appears later), and sizes that chunk so that pyarrow
  parses it as one block (see `_chunksize`: pyarrow 26 can segfault when it
  re-parses a chunk whose long line straddles blocks);
* sets `on_mixed_types=None`: the datasets 5.x default ("use_json") re-encodes
  a field whose type varies between rows as JSON text and leaves any string
  that already parses as JSON untouched, so a caption such as ``"5"`` or
  ``"\\"quoted\\""`` would come back changed; we would rather get the error
  and explain it ourselves;
* sets `parse_agent_traces=False`: otherwise a generic JSON Lines file whose
  columns happen to look like an agent trace is rewritten;
* lowers datasets' logging while reading, since it logs errors to stderr
  before raising them, and we report the error ourselves.

Errors from datasets, pyarrow or pandas come out as `DatasetsReadError`; the
caller decides what to say (it usually re-reads the file with the standard
library to point at the exact line or entry).
"""

from __future__ import annotations

import contextlib
import glob
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from wenlan_cli.data.memory import release_freed_memory

__all__ = ["Columns", "DatasetsReadError", "columns_of_table", "read_json_table"]

# Rows per Arrow batch pulled from the streaming dataset.
_BATCH_ROWS = 65536
# From this size on datasets itself parses a one-chunk file as a single block.
_SINGLE_BLOCK_FROM = 1 << 18


def _chunksize(size: int) -> int:
    """The JSON loader's `chunksize` that reads a `size`-byte file as one pyarrow block.

    datasets reads `chunksize` bytes, uses blocks of `chunksize // 32`, and
    falls back to one block when the chunk is longer than 8 blocks. A big file
    read in one chunk meets that rule. A small one gets a chunk 256 times its
    size, so that one block holds it even after datasets re-encodes a JSON
    list as JSON Lines (ujson escapes non-ASCII, at most tripling the size);
    Python only allocates that much for the read, and at most 64 MiB.
    A chunk parsed in several blocks is what crashed pyarrow: a line that
    straddles blocks makes datasets retry with bigger blocks, and pyarrow
    26.0.1 segfaulted on one such retry.
    """
    if size >= _SINGLE_BLOCK_FROM:
        return size + 1
    return 256 * (size + 1)


class DatasetsReadError(Exception):
    """datasets (or pyarrow / pandas underneath) could not read a file."""

    def __init__(self, detail: str):
        super().__init__(detail)
        self.detail = detail


@dataclass
class Columns:
    """The columns of a file as Python lists (missing values are None)."""

    num_rows: int = 0
    names: list[str] = field(default_factory=list)
    data: dict[str, list] = field(default_factory=dict)

    def column(self, name: str) -> list:
        """Values of `name`, or a list of None when the file has no such column."""
        return self.data.get(name) or [None] * self.num_rows

    def rows(self, names: list[str]) -> list[dict]:
        """One dict per row holding only `names` (None where absent)."""
        cols = [self.column(n) for n in names]
        return [dict(zip(names, values)) for values in zip(*cols)] if names else [{}] * self.num_rows


def _short(exc: BaseException) -> str:
    """One line describing an exception raised inside datasets."""
    text = " ".join(str(exc).split())
    if not text:
        text = type(exc).__name__
    if len(text) > 200:
        text = text[:197] + "..."
    return text


@contextlib.contextmanager
def _quiet_datasets() -> Iterator[object]:
    import datasets

    logging = datasets.utils.logging
    before = logging.get_verbosity()
    logging.set_verbosity(logging.CRITICAL)
    try:
        yield datasets
    finally:
        logging.set_verbosity(before)


@contextlib.contextmanager
def _private_copy_name(path: Path, suffix: str) -> Iterator[tuple[str, str]]:
    """A temporary folder holding a plainly named symlink to `path`."""
    with tempfile.TemporaryDirectory(prefix="wenlan-datasets-") as tmp:
        link = os.path.join(tmp, "data" + suffix)
        try:
            os.symlink(os.path.abspath(path), link)
        except OSError:  # e.g. no symlink permission: fall back to an escaped pattern
            link = glob.escape(os.path.abspath(path))
        yield link, os.path.join(tmp, "cache")


def columns_of_table(table, want: list[str] | None = None) -> Columns:
    """The columns of `read_json_table`'s Arrow table as Python lists (`want`: which ones, all when None)."""
    out = Columns(num_rows=table.num_rows, names=list(table.column_names))
    for name in out.names:
        if want is None or name in want:
            out.data[name] = table.column(name).to_pylist()
    return out


def read_json_table(path: Path):
    """Parse a JSON list-of-objects or JSON Lines file with `datasets` into one Arrow table.

    The file is read in one chunk (see `_chunksize`), so its batches share one schema;
    readers check and keep the columns as Arrow arrays instead of a Python object per
    row. Raises DatasetsReadError.
    """
    import pyarrow as pa

    try:
        size = os.path.getsize(path)
    except OSError as exc:
        raise DatasetsReadError(exc.strerror or str(exc)) from None
    with _quiet_datasets() as datasets, _private_copy_name(path, ".json") as (name, cache):
        try:
            dataset = datasets.load_dataset(
                "json",
                data_files=name,
                split="train",
                streaming=True,
                cache_dir=cache,
                on_mixed_types=None,
                parse_agent_traces=False,
                chunksize=_chunksize(size),
            )
            tables = list(dataset.with_format("arrow").iter(batch_size=_BATCH_ROWS))
            if not tables:
                return pa.table({})
            table = pa.concat_tables(tables, promote_options="permissive")
            table.validate(full=True)  # e.g. bytes that are not UTF-8 in a string column
        except Exception as exc:  # datasets, pyarrow, pandas, ujson raise all kinds (RecursionError too)
            raise DatasetsReadError(_short(exc)) from exc
    release_freed_memory()  # datasets parsed a JSON list through a Python object per entry
    return table
