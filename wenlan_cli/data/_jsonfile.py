"""Load a JSON annotation file through `datasets`, with exact error locations.

`load_json_rows` parses with `datasets` (see `_hf`). When that fails, or the
file is obviously of the wrong shape, the file is read again with the
standard library only to find what is wrong and where: the line and column
of a syntax error, the byte that is not UTF-8, the entry or line whose field
is wrong, or the field whose JSON type changes between rows (which datasets
cannot store). The standard-library pass never produces records; it only
produces the DataError message.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Literal, TypeVar

from wenlan_cli.data._hf import DatasetsReadError, columns_of_table, read_json_table
from wenlan_cli.data.fields import json_type_name
from wenlan_cli.data.files import BOM, not_an_object, parse_json, read_json_lines, read_text
from wenlan_cli.data.paths import quote_value
from wenlan_cli.errors import DataError

__all__ = ["Layout", "RowNames", "load_json_rows", "load_json_table", "parse_unique_rows", "rows_of_table"]

Layout = Literal["array", "lines"]
# check(where, row) validates one row (a mapping) and raises DataError.
Check = Callable[[str, Mapping], object]

T = TypeVar("T")

_BLANK = b" \t\r\n"
# The column datasets puts the items of a JSON list in when they are not objects.
_WRAPPED = "text"


def _head(path: Path) -> bytes:
    """The start of the file without a BOM and leading whitespace (up to 1 MiB read)."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 20)
    if head.startswith(BOM):
        head = head[len(BOM) :]
    return head.lstrip(_BLANK)


def _shape_ok(head: bytes, layout: Layout) -> bool:
    """Whether the file starts as it should: "[{" / "[]" for a list, "{" for lines."""
    if layout == "lines":
        return head.startswith(b"{")
    if not head.startswith(b"["):
        return False
    rest = head[1:].lstrip(_BLANK)
    return not rest or rest[:1] in (b"{", b"]")


def _what(layout: Layout) -> str:
    return "a JSON list of objects" if layout == "array" else "one JSON object per line"


def load_json_rows(path: Path, layout: Layout, fields: list[str], check: Check) -> tuple[list[dict], RowNames]:
    """Parse `path` with datasets; return its rows and a function naming row i.

    Rows are dicts holding `fields` (None where a row lacks the field or has
    null). `names(i)` is "PATH entry i" (0-based, as in `jq '.[i]'`) for a
    JSON list and "PATH line N" (1-based) for JSON Lines. `check` is the
    reader's own row check, used to word the error when datasets fails.
    Raises DataError for anything that cannot be read.
    """
    table, names = load_json_table(path, layout, check)
    return rows_of_table(table, layout, fields), names


def load_json_table(path: Path, layout: Layout, check: Check):
    """Parse `path` with datasets into one Arrow table (see `load_json_rows`); returns the
    table and the row namer. A reader checks the columns vectorised and falls back to
    `rows_of_table` (no second parse) when a column is not of the plain expected type."""
    try:
        head = _head(path)
    except OSError as exc:
        raise DataError(f"{path} cannot be read ({exc.strerror or exc}).") from None
    if not head:
        raise DataError(f"{path} is empty; expected {_what(layout)}.")
    if not _shape_ok(head, layout):
        _diagnose(path, layout, check, detail=None)
    try:
        table = read_json_table(path)
    except DatasetsReadError as exc:
        _diagnose(path, layout, check, detail=exc.detail)
        raise AssertionError("unreachable")  # _diagnose always raises
    if table.num_rows == 0:
        _diagnose(path, layout, check, detail="it yielded no rows")
    return table, RowNames(path, layout, table.num_rows)


def rows_of_table(table, layout: Layout, fields: list[str]) -> list[dict]:
    """One dict per row of `load_json_table`'s table, holding `fields` (None where absent)."""
    columns = columns_of_table(table, want=[*fields, _WRAPPED])
    if layout == "array" and columns.names == [_WRAPPED] and _WRAPPED not in fields:
        # datasets decides "list of objects" vs "list of strings" from the first
        # 100 bytes; past a long indent it wraps each object as {"text": object}.
        wrapped = columns.column(_WRAPPED)
        if all(v is None or isinstance(v, dict) for v in wrapped):
            return [{f: (v or {}).get(f) for f in fields} for v in wrapped]
    return columns.rows(fields)


class RowNames:
    """Names rows for messages: `names(i)` is "PATH line 7", `names.short(i)` is "line 7".

    For JSON Lines the line numbers are found only when first asked for (one
    pass over the file), so a clean file is read by datasets alone.
    """

    def __init__(self, path: Path, layout: Layout, num_rows: int):
        self.path = path
        self.layout = layout
        self.num_rows = num_rows
        self._lines: list[int] | None = None

    def short(self, i: int) -> str:
        if self.layout == "array":
            return f"entry {i}"
        if self._lines is None:
            # datasets skips blank lines, so row i is the i-th non-blank line.
            with open(self.path, "rb") as handle:
                self._lines = [n for n, line in enumerate(handle, 1) if line.strip(_BLANK)]
            if len(self._lines) != self.num_rows:
                self._lines = []
        return f"line {self._lines[i]}" if self._lines else f"record {i + 1}"

    def __call__(self, i: int) -> str:
        return f"{self.path} {self.short(i)}"


def parse_unique_rows(rows: list[dict], names: RowNames, parse: Callable[[str, Mapping], T]) -> list[T]:
    """`parse(where, row)` for each row, checking that image ids do not repeat.

    Rows are parsed with an empty location first and, only when one fails,
    again with its real location, so clean files never pay for line numbers.
    """
    records: list[T] = []
    first_seen: dict[str, int] = {}
    for i, row in enumerate(rows):
        try:
            record = parse("", row)
        except DataError:
            parse(names(i), row)
            raise
        image_id = record.image_id  # type: ignore[attr-defined]
        earlier = first_seen.setdefault(image_id, i)
        if earlier != i:
            raise DataError(
                f"{names(i)}: image_id {quote_value(image_id)} repeats {names.short(earlier)}; "
                f"each image must appear once."
            )
        records.append(record)
    return records


def _entries(path: Path, layout: Layout) -> list[tuple[str, object]]:
    """(where, parsed value) for every entry, raising DataError on syntax errors."""
    if layout == "array":
        value = parse_json(read_text(path), str(path))
        if not isinstance(value, list):
            raise DataError(f"{path} holds {json_type_name(value)} at the top level; expected {_what(layout)}.")
        return [(f"{path} entry {i}", entry) for i, entry in enumerate(value)]
    return [(f"{path} line {number}", value) for number, value in read_json_lines(path, objects=False)]


def _diagnose(path: Path, layout: Layout, check: Check, detail: str | None) -> None:
    """Find why `path` cannot be read and raise a DataError that says so."""
    entries = _entries(path, layout)
    for where, entry in entries:
        if not isinstance(entry, dict):
            raise not_an_object(where, entry)
        check(where, entry)
    if not entries:
        empty = "holds an empty list" if layout == "array" else "holds no JSON lines"
        raise DataError(f"{path}: the file {empty}; there are no records to read.")
    try:
        change = _first_type_change(entries, f"{path} ")
    except RecursionError:
        change = None
    if change:
        raise DataError(change)
    if detail is None:
        detail = "unexpected layout"
    raise DataError(f"{path}: the datasets library could not read it ({detail}).")


def _plural(kind: str) -> str:
    """'a list of strings' -> 'lists of strings'."""
    words = kind.split(" ")[1:]
    return " ".join([words[0] + "s", *words[1:]])


def _kind(value: object) -> str | None:
    """A JSON type as datasets/pyarrow sees it ("a list of strings"); None for null."""
    if value is None:
        return None
    if isinstance(value, list):
        inner = {_kind(v) for v in value} - {None}
        for k in inner:
            if k.startswith("a list mixing"):
                return k
        if len(inner) > 1:
            return "a list mixing " + " and ".join(sorted(_plural(k) for k in inner))
        return f"a list of {_plural(inner.pop())}" if inner else "a list"
    return json_type_name(value)


def _fits(a: str, b: str) -> bool:
    """Whether two kinds can share a column (an empty list fits any list)."""
    if a == b:
        return True
    short, long = sorted((a, b), key=len)
    return short.endswith(("list", "lists")) and long.startswith(short)


def _first_type_change(entries: list[tuple[str, object]], prefix: str = "") -> str | None:
    """The first field whose JSON type differs from an earlier row's, as an error message.

    `prefix` (the file name) is dropped from the earlier row's name to keep
    the message short.
    """
    seen: dict[str, tuple[str, str]] = {}
    for where, entry in entries:
        assert isinstance(entry, dict)
        for key, value in entry.items():
            kind = _kind(value)
            if kind is None:
                continue
            if kind.startswith("a list mixing"):
                return (
                    f"{where}: field {quote_value(key)} is {kind}; datasets needs one JSON type "
                    f"per field, so write its items in one form."
                )
            if key not in seen:
                seen[key] = (kind, where)
            elif not _fits(seen[key][0], kind):
                first_kind, first_where = seen[key]
                if prefix and first_where.startswith(prefix):
                    first_where = first_where[len(prefix) :]
                return (
                    f"{where}: field {quote_value(key)} is {kind} but {first_where} has {first_kind}; "
                    f"datasets needs one JSON type per field, so write every value of it in one form."
                )
            elif len(kind) > len(seen[key][0]):
                seen[key] = (kind, where)  # keep the more specific kind
    return None
