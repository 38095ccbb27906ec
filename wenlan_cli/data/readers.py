"""The registry of dataset readers: one name per annotation format.

A reader is a function ``fn(data_dir: Path, split: str, **options) ->
Sequence[ImageTextRecord]`` (a list, or a `table.RecordTable` that holds a
large split as columns) that returns records in file order and raises
DataError / UsageError (never anything else) for bad input. Built-in readers
are registered below through the same `register_reader` a plugin would use.
Two dataset names are not readers here: "synth" and "webdataset" are handled by
`load_records` in data/sources.py (see the note above the registrations).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from pathlib import Path

from wenlan_cli.data.aic_icc import read_aic_icc
from wenlan_cli.data.brivl_jsonl import read_brivl_jsonl
from wenlan_cli.data.chinese_clip import read_coco_cn, read_flickr30k_cn, read_muge
from wenlan_cli.data.generic import read_csv, read_jsonl
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.errors import DataError, UsageError

__all__ = ["Reader", "available_datasets", "read_split", "register_reader", "unregister_reader"]

Reader = Callable[..., Sequence[ImageTextRecord]]  # a list, or a table.RecordTable

_READERS: dict[str, Reader] = {}


def register_reader(name: str, fn: Reader, *, replace: bool = False) -> None:
    """Make `fn` readable as ``--dataset name``.

    Raises ValueError (a programming error, not a user error) when the name
    is empty or already taken and `replace` is false.
    """
    if not isinstance(name, str) or not name:
        raise ValueError("a reader needs a non-empty name")
    if not callable(fn):
        raise ValueError(f"the reader for {name!r} is not callable")
    if name in _READERS and not replace:
        raise ValueError(f"a reader named {name!r} is already registered")
    _READERS[name] = fn


def unregister_reader(name: str) -> None:
    """Remove a reader (tests use this to undo a registration)."""
    _READERS.pop(name, None)


def available_datasets() -> list[str]:
    """Registered dataset names, sorted."""
    return sorted(_READERS)


def _check_options(name: str, fn: Reader, options: dict) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return
    parameters = list(signature.parameters.values())
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        return
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    accepted = [p.name for p in parameters[2:] if p.kind in named]  # after (data_dir, split)
    unknown = [key for key in options if key not in accepted]
    if unknown:
        takes = f"it takes: {', '.join(accepted)}" if accepted else "it takes none"
        raise UsageError(f"the dataset {name!r} has no option {unknown[0]!r} ({takes}).")


def read_split(dataset: str, data_dir: Path | str, split: str, **options) -> Sequence[ImageTextRecord]:
    """Read `split` of `dataset` from `data_dir`; records come back in file order.

    Raises UsageError for an unknown dataset (listing the choices) or an
    option the reader does not take, and DataError when `data_dir` is missing
    or the data is bad.
    """
    fn = _READERS.get(dataset)
    if fn is None:
        raise UsageError(f"unknown dataset {dataset!r}; choose one of: {', '.join(available_datasets())}.")
    _check_options(dataset, fn, options)
    data_dir = Path(data_dir)
    if not data_dir.exists():
        raise DataError(f"the data folder {data_dir} does not exist.")
    if not data_dir.is_dir():
        raise DataError(f"the data folder {data_dir} is not a folder.")
    return fn(data_dir, split, **options)


# Built-in formats. "synth" is not registered: `load_records` (data/sources.py)
# generates or finds the cached synthetic folder (data/synthetic.py), which is in
# the AIC-ICC layout, and reads it with the "aic-icc" reader; "webdataset" shards
# are read there too (data/shards.py). Other modules test for these two names
# directly (train/loop.py, data/convert.py, data/check.py, report/page.py, the AIC-ICC
# plugin's finetune.py) or list them (tasks.py, the --dataset helps).
register_reader("aic-icc", read_aic_icc)
register_reader("brivl-jsonl", read_brivl_jsonl)
register_reader("jsonl", read_jsonl)
register_reader("csv", read_csv)
# Chinese-CLIP's preprocessed retrieval benchmarks ({split}_texts.jsonl + {split}_imgs.tsv).
register_reader("muge", read_muge)
register_reader("flickr30k-cn", read_flickr30k_cn)
register_reader("coco-cn", read_coco_cn)
