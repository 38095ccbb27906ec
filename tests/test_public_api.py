"""No private attribute of a third-party package is used anywhere in the source.

A name with a leading underscore (``torch._foreach_mul_``, ``BLEU()._aggregate_and_compute``,
``batchnorm._BatchNorm``, ``from timm.models._registry import ...``) is an
implementation detail its package may rename or drop in any release, which would
break wenlan without a deprecation. The check reads the source with `ast`: in every
module of wenlan_cli/, the plugins and benchmarks/ it collects the names bound by
imports of third-party packages (neither the standard library nor this repository),
follows them through simple assignments (``metric = BLEU(...)``), and reports any
``_private`` attribute reached from them, ``getattr``-style access with a literal
``"_private"`` name, and imports from ``_private`` modules. Dunder names are public.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCES = [ROOT / "wenlan_cli", *sorted((ROOT / "plugins").glob("*/wenlan_*")), ROOT / "benchmarks"]

# (path relative to the repository, what the check reports) -> why there is no public way.
# Every entry needs a reason a reader can check; an empty allow-list is the goal.
ALLOWED: dict[tuple[str, str], str] = {}


def _first_party() -> set[str]:
    names = {"wenlan_cli", "wenlan_aic_icc"}
    names |= {p.stem for p in (ROOT / "benchmarks").glob("*.py")}  # benchmarks import their helpers by name
    return names


FIRST_PARTY = _first_party()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _third_party(module: str | None, level: int = 0) -> bool:
    if level or not module:
        return False
    top = module.split(".")[0]
    return top not in sys.stdlib_module_names and top not in FIRST_PARTY and top != "__future__"


def _root(node: ast.AST) -> str | None:
    """The variable an expression such as ``a.b(c)[0].d`` starts from."""
    while True:
        if isinstance(node, ast.Attribute | ast.Subscript):
            node = node.value
        elif isinstance(node, ast.Call):
            node = node.func
        elif isinstance(node, ast.Await):
            node = node.value
        elif isinstance(node, ast.Name):
            return node.id
        else:
            return None


def _targets(node: ast.AST) -> list[str]:
    if isinstance(node, ast.Name):
        return [node.id]
    if isinstance(node, ast.Tuple | ast.List):
        return [n for element in node.elts for n in _targets(element)]
    if isinstance(node, ast.Starred):
        return _targets(node.value)
    return []


def private_uses(source: str) -> list[tuple[int, str]]:
    """(line, what) for each private attribute of a third-party package that `source` uses."""
    tree = ast.parse(source)
    found: list[tuple[int, str]] = []
    external: set[str] = set()  # names that hold a third-party module, or something made from one
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _third_party(alias.name):
                    external.add(alias.asname or alias.name.split(".")[0])
                    private = [part for part in alias.name.split(".") if _is_private(part)]
                    if private:
                        found.append((node.lineno, f"import {alias.name}"))
        elif isinstance(node, ast.ImportFrom) and _third_party(node.module, node.level):
            if any(_is_private(part) for part in node.module.split(".")):
                found.append((node.lineno, f"from {node.module} import ..."))
            for alias in node.names:
                external.add(alias.asname or alias.name)
                if _is_private(alias.name):
                    found.append((node.lineno, f"from {node.module} import {alias.name}"))
    # Follow assignments until nothing new is reached (``metric = BLEU(); stats = metric.x(...)``).
    changed = True
    while changed:
        changed = False
        for node in ast.walk(tree):
            pairs: list[tuple[ast.AST, ast.AST | None]] = []
            if isinstance(node, ast.Assign):
                pairs = [(target, node.value) for target in node.targets]
            elif isinstance(node, ast.AnnAssign | ast.AugAssign | ast.NamedExpr):
                pairs = [(node.target, node.value)]
            elif isinstance(node, ast.For | ast.AsyncFor):
                pairs = [(node.target, node.iter)]
            elif isinstance(node, ast.withitem) and node.optional_vars is not None:
                pairs = [(node.optional_vars, node.context_expr)]
            for target, value in pairs:
                if value is not None and _root(value) in external:
                    new = set(_targets(target)) - external
                    if new:
                        external |= new
                        changed = True
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and _is_private(node.attr) and _root(node.value) in external:
            found.append((node.lineno, f"{_root(node.value)}...{node.attr}"))
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Name)
            and node.func.id in ("getattr", "setattr", "hasattr", "delattr")
            and len(node.args) >= 2
            and isinstance(node.args[1], ast.Constant)
            and isinstance(node.args[1].value, str)
            and _is_private(node.args[1].value)
            and _root(node.args[0]) in external
        ):
            found.append((node.lineno, f"{node.func.id}({_root(node.args[0])}, {node.args[1].value!r})"))
    return sorted(set(found))


def test_the_check_finds_private_uses_and_leaves_public_ones_alone():
    source = '''
import torch
import numpy as np
from sacrebleu.metrics import BLEU
from timm.models._registry import get_pretrained_cfg
from collections import OrderedDict
from wenlan_cli.data import synthetic
from . import _tasks

stats = BLEU(tokenize="zh")._extract_corpus_statistics(h, r)
metric = BLEU()
metric.num_refs = 3
score = metric._aggregate_and_compute(stats)
torch._foreach_mul_(params, 0.9)
ok = isinstance(m, torch.nn.modules.batchnorm._BatchNorm)
for p in torch.nn.Linear(2, 2).parameters():
    p._version
getattr(np.random, "_bit_generator", None)
x = np.zeros(3).__class__.__name__
y = self._cache
z = synthetic._scene_key
w = _tasks._timed
d = OrderedDict()._OrderedDict__map
'''
    lines = {line for line, _ in private_uses(source)}
    assert lines == {5, 10, 13, 14, 15, 17, 18}


def test_no_private_attribute_of_a_third_party_package_is_used():
    hits = []
    for folder in SOURCES:
        for path in sorted(folder.rglob("*.py")):
            relative = path.relative_to(ROOT).as_posix()
            for line, what in private_uses(path.read_text(encoding="utf-8")):
                if (relative, what) not in ALLOWED:
                    hits.append(f"{relative}:{line}: {what}")
    assert hits == [], "private attributes of third-party packages (use their public API):\n" + "\n".join(hits)
