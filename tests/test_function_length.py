"""No library, plugin, example or benchmark function longer than 60 lines.

A long function mixes steps that each deserve a name, a docstring saying why and a
test of their own; past ~60 lines a reader can no longer hold it at once. The scan is
`ast` over the source: a def's length is `end_lineno - lineno + 1` (decorators not
counted; a nested def counts inside its parent and on its own). `KNOWN_LONG` lists the
functions still over the limit, each with its length when listed; the second test
keeps that list from going stale, so it can only shrink.

`python tests/test_function_length.py` prints every function over the limit.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCANNED = ("wenlan_cli", "plugins/wenlan-aic-icc/wenlan_aic_icc", "examples", "benchmarks")
MAX_LINES = 60

# "path::Qualified.name": its length in lines when it was listed.
KNOWN_LONG: dict[str, int] = {}


def lengths_in(source: str, path: str) -> dict[str, tuple[int, int]]:
    """Every def in one file's source: "path::qualname" -> (first line, length)."""
    found: dict[str, tuple[int, int]] = {}

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                name = prefix + child.name
                found[f"{path}::{name}"] = (child.lineno, child.end_lineno - child.lineno + 1)
                visit(child, name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)

    visit(ast.parse(source, filename=path), "")
    return found


def function_lengths() -> dict[str, tuple[int, int]]:
    """Every function and method under SCANNED: "path::qualname" -> (first line, length)."""
    found: dict[str, tuple[int, int]] = {}
    for folder in SCANNED:
        for file in sorted((ROOT / folder).rglob("*.py")):
            relative = file.relative_to(ROOT)
            if ".venv" in relative.parts or "build" in relative.parts:
                continue
            found.update(lengths_in(file.read_text(encoding="utf-8"), relative.as_posix()))
    return found


def too_long() -> dict[str, tuple[int, int]]:
    return {name: where for name, where in function_lengths().items() if where[1] > MAX_LINES}


def _describe(items: dict[str, tuple[int, int]]) -> str:
    rows = sorted(items.items(), key=lambda item: -item[1][1])
    return "\n".join(f"  {name.split('::')[0]}:{line} {name.split('::')[1]} ({length} lines)" for name, (line, length) in rows)


def test_no_function_over_the_limit():
    offenders = {name: where for name, where in too_long().items() if name not in KNOWN_LONG}
    assert not offenders, (
        f"functions longer than {MAX_LINES} lines (split them into named steps):\n{_describe(offenders)}"
    )


def test_known_long_list_only_shrinks():
    lengths = function_lengths()
    gone = sorted(name for name in KNOWN_LONG if name not in lengths)
    fixed = sorted(name for name in KNOWN_LONG if name in lengths and lengths[name][1] <= MAX_LINES)
    assert not gone, f"KNOWN_LONG in tests/test_function_length.py names functions that no longer exist (remove them): {gone}"
    assert not fixed, (
        f"KNOWN_LONG in tests/test_function_length.py names functions now within {MAX_LINES} lines (remove them): {fixed}"
    )


def test_lengths_count_from_def_to_last_line():
    """Decorators are not counted; methods are named by class; a nested def counts on its own."""
    body = "\n".join(f"    x{i} = {i}" for i in range(58))
    source = (
        "import functools\n\n\n"
        "@functools.lru_cache\n"
        f"def long_one():\n{body}\n    return x0\n\n\n"
        "class Holder:\n"
        "    async def method(self):\n"
        "        def inner():\n"
        "            return 1\n"
        "        return inner()\n"
    )
    lengths = lengths_in(source, "pkg/mod.py")
    assert lengths["pkg/mod.py::long_one"] == (5, 60)
    assert lengths["pkg/mod.py::Holder.method"] == (68, 4)
    assert lengths["pkg/mod.py::Holder.method.inner"] == (69, 2)


def test_scan_covers_the_library_and_the_plugin():
    lengths = function_lengths()
    assert "wenlan_cli/search/index.py::update_index" in lengths
    assert any(name.startswith("plugins/wenlan-aic-icc/wenlan_aic_icc/scoring.py::") for name in lengths)
    assert any(name.startswith("benchmarks/") for name in lengths)


if __name__ == "__main__":
    print(_describe(too_long()) or f"no function over {MAX_LINES} lines")
    sys.exit(0)
