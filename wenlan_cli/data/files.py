"""One small reader per file kind (UTF-8 text, JSON, JSON Lines, CSV), with one error wording.

Labels, query texts, annotation files, index manifests and caption files all come from
users, so every reader fails the same way: one DataError sentence that starts with the
file (`what` + path, e.g. "the labels file a.txt") and, where known, the line:

    a.txt does not exist.
    a.txt cannot be read (Permission denied).
    a.txt line 3 is not valid UTF-8 (byte 0xd2).
    a.json is not valid JSON (Expecting ',' delimiter at line 2, column 5).
    a.jsonl line 4 is not valid JSON (Expecting value at column 1).
    a.json is empty; expected a JSON object.
    a.json holds a string at the top level; expected a JSON object.
    a.csv line 7 is not valid CSV (...).

A leading UTF-8 BOM is dropped (Windows editors write one). Callers add their own
checks of the values, naming the field, after the same "PATH line N" start.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path

from ..errors import DataError
from .fields import MAX_CAPTION_CHARS, json_type_name

__all__ = [
    "BOM",
    "not_an_object",
    "parse_json",
    "read_bytes",
    "read_csv_rows",
    "read_json",
    "read_json_lines",
    "read_text",
    "read_text_lines",
    "utf8_text",
]

BOM = b"\xef\xbb\xbf"
_BLANK = b" \t\r\n"


def read_bytes(path: str | Path, what: str = "", missing: str = "") -> bytes:
    """The file's bytes; `missing` is added to the "does not exist" sentence (a hint)."""
    name = f"{what}{path}"
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{name} does not exist{'; ' + missing if missing else ''}.") from None
    except OSError as exc:
        raise DataError(f"{name} cannot be read ({exc.strerror or exc}).") from None


def utf8_text(data: bytes, name: str, first_line: int = 1) -> str:
    """`data` decoded as UTF-8 (a leading BOM dropped); `name` is the file (or "FILE line N"
    when `data` is one line) for the error, which names the line of the first bad byte."""
    if data.startswith(BOM):
        data = data[len(BOM):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = first_line + data.count(b"\n", 0, exc.start)
        raise DataError(f"{name} line {line} is not valid UTF-8 (byte {data[exc.start]:#04x}).") from None


def read_text(path: str | Path, what: str = "", missing: str = "") -> str:
    """The text of a UTF-8 file (a leading BOM dropped)."""
    return utf8_text(read_bytes(path, what, missing), f"{what}{path}")


def read_text_lines(path: str | Path, what: str = "the texts file ") -> list[str]:
    """Non-blank lines of a UTF-8 file, stripped; each is one text to encode."""
    return [line.strip() for line in read_text(path, what).splitlines() if line.strip()]


def parse_json(text: str | bytes, name: str, one_line: bool = False) -> object:
    """One JSON value; `name` starts the error ("FILE" or "FILE line N" with `one_line`,
    where the column alone locates the error)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        at = f"column {exc.colno}" if one_line else f"line {exc.lineno}, column {exc.colno}"
        raise DataError(f"{name} is not valid JSON ({exc.msg} at {at}).") from None
    except RecursionError:
        raise DataError(f"{name} is nested too deeply to be read.") from None
    except ValueError as exc:  # e.g. an integer with more than 4300 digits
        raise DataError(f"{name} is not valid JSON ({' '.join(str(exc).split())[:120]}).") from None


def not_an_object(where: str, value: object) -> DataError:
    """The error for an entry or line `where` that holds `value` instead of a JSON object."""
    return DataError(f"{where} holds {json_type_name(value)}; expected a JSON object.")


def read_json(path: str | Path, what: str = "", *, expect: type | None = None, missing: str = "") -> object:
    """The JSON value of a file; with `expect` (dict or list) the top level must be one."""
    name = f"{what}{path}"
    text = read_text(path, what, missing)
    expected = {dict: "a JSON object", list: "a JSON list", None: "JSON"}[expect]
    if not text.strip():
        raise DataError(f"{name} is empty; expected {expected}.")
    value = parse_json(text, name)
    if expect is not None and not isinstance(value, expect):
        raise DataError(f"{name} holds {json_type_name(value)} at the top level; expected {expected}.")
    return value


def read_json_lines(path: str | Path, what: str = "", *, objects: bool = True,
                    missing: str = "") -> Iterator[tuple[int, object]]:
    """(1-based line number, value) of every non-blank line, in order. Each line is
    decoded and parsed when reached, so the first bad line is the one named; with
    `objects` a line that is not a JSON object is an error too."""
    name = f"{what}{path}"
    data = read_bytes(path, what, missing)
    if data.startswith(BOM):
        data = data[len(BOM):]
    for number, raw in enumerate(data.split(b"\n"), 1):
        if not raw.strip(_BLANK):
            continue
        text = utf8_text(raw, name, number)
        if not text.strip():  # only other whitespace (e.g. U+3000): blank as well
            continue
        where = f"{name} line {number}"
        value = parse_json(text, where, one_line=True)
        if objects and not isinstance(value, dict):
            raise not_an_object(where, value)
        yield number, value


def read_csv_rows(path: str | Path, what: str = "") -> list[tuple[int, list[str]]]:
    """(starting line, cells) of every non-blank record of a UTF-8 CSV file, every cell
    the string written (no number or NA conversion), in one pass of the csv module.
    The cells are those pandas reads (text after a closing quote is kept, `"a"b` is
    `ab`); blank and whitespace-only lines are skipped as pandas skips them; and a quote
    left open at the end of the file, which the lenient csv module would take as a field
    running to the end, is refused as pandas refuses it."""
    name = f"{what}{path}"
    text = read_text(path, what)
    physical = io.StringIO(text, newline="").readlines()  # the lines as the csv module counts them
    reader = csv.reader(io.StringIO(text, newline=""))
    out: list[tuple[int, list[str]]] = []
    while True:
        start = reader.line_num + 1
        try:
            cells = next(reader)
        except StopIteration:
            _check_closed(name, physical, out)
            return out
        except csv.Error as exc:
            if "field limit" in str(exc):  # the one rule for captions (fields.MAX_CAPTION_CHARS) says more
                raise DataError(
                    f"{name} line {reader.line_num} has a field longer than {csv.field_size_limit():,} characters; "
                    f"a caption may have at most {MAX_CAPTION_CHARS:,}."
                ) from None
            raise DataError(f"{name} line {reader.line_num} is not valid CSV ({exc}).") from None
        blank = not cells or (reader.line_num == start and not physical[start - 1].strip())
        if not blank:
            out.append((start, cells))


def _check_closed(name: str, physical: list[str], records: list[tuple[int, list[str]]]) -> None:
    """Refuse a last record whose quote is never closed (read again strictly: one record)."""
    if not records:
        return
    last = records[-1][0]
    try:
        for _ in csv.reader(io.StringIO("".join(physical[last - 1 :]), newline=""), strict=True):
            pass
    except csv.Error as exc:
        if "end of data" in str(exc):
            raise DataError(f"{name} line {last} is not valid CSV (a quoted field is not closed).") from None
