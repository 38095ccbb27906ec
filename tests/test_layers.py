"""Imports point one way: CLI -> application -> engine/models -> data (ARCHITECTURE.md).

The imports are read with `ast`, not by importing the modules, so a lazy import inside a
function counts as much as one at the top of a file, and nothing heavy is loaded. No
import points up a layer (asserted); `python tests/test_layers.py` prints any that does
and the imports between applications, which ARCHITECTURE.md ("Imports that cross") lists
with why each is by design.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "wenlan_cli"
PLUGIN = REPO / "plugins" / "wenlan-aic-icc" / "wenlan_aic_icc"

# The layer of each module, by the longest matching dotted prefix. "base" modules hold
# values every layer shares (errors, configs, strict JSON) and import nothing above them.
LAYERS = ("base", "data", "engine", "application", "cli")
LAYER_OF = {
    "wenlan_cli.cli": "cli",
    "wenlan_cli.__main__": "cli",
    "wenlan_cli": "application",  # the package root: the `wenlan.load` facade over api.py
    "wenlan_cli.api": "application",
    "wenlan_cli.classify": "application",
    "wenlan_cli.tasks": "application",
    "wenlan_cli.plugin_api": "application",  # the declared surface a task plugin imports
    "wenlan_cli.train": "application",
    "wenlan_cli.search": "application",
    "wenlan_cli.serve": "application",
    "wenlan_cli.report": "application",
    "wenlan_cli.export": "application",
    "wenlan_cli.convert": "application",
    "wenlan_cli.encode_inputs": "application",  # what `wenlan encode` encodes, and its manifest
    "wenlan_cli.engine": "engine",
    "wenlan_cli.models": "engine",
    "wenlan_cli.encode": "engine",
    "wenlan_cli.loading": "engine",
    "wenlan_cli.backends": "engine",
    "wenlan_cli.runtime": "engine",
    "wenlan_cli.eval": "engine",
    "wenlan_cli.data": "data",
    "wenlan_cli.config": "base",
    "wenlan_cli.errors": "base",
    "wenlan_cli.strict_json": "base",
    "wenlan_cli.durations": "base",
    "wenlan_cli.cores": "base",
    "wenlan_cli.output_paths": "base",
    "wenlan_cli.option_spec": "base",
    "wenlan_cli.declared": "base",  # commands built from option_spec declarations (typer)
    # The AIC-ICC task plugin: its commands, its fine-tuning / captioning / scoring, its model.
    "wenlan_aic_icc": "cli",
    "wenlan_aic_icc.task": "cli",
    "wenlan_aic_icc.commands": "cli",
    "wenlan_aic_icc.finetune": "application",
    "wenlan_aic_icc.generate": "application",
    "wenlan_aic_icc.scoring": "application",
    "wenlan_aic_icc._java": "application",
    "wenlan_aic_icc._tasks": "application",
    "wenlan_aic_icc.model": "engine",
    "wenlan_aic_icc.decoding": "engine",
    "wenlan_aic_icc.checkpoint": "engine",
    # FinetuneConfig, finetune-caption's options: under every plugin module that uses it (it reaches
    # the core's check_number and errors through the plugin surface, so it is not "base").
    "wenlan_aic_icc.config": "engine",
}

# The one core module a task plugin may import (ARCHITECTURE.md, "A task plugin").
PLUGIN_SURFACE = "wenlan_cli.plugin_api"
# Plugin modules that still import other core modules (none: finetune.py stands on the
# engine's Trainer through the surface).
PLUGIN_NOT_YET_ON_THE_SURFACE: set[str] = set()


@dataclass(frozen=True)
class Import:
    module: str  # the importing module, dotted
    target: str  # the imported module (or, for `from pkg import name`, pkg.name when that is a module)
    where: str  # path:line

    def __str__(self) -> str:
        return f"{self.where}: {self.module} imports {self.target}"


def module_names(package_dir: Path) -> dict[str, Path]:
    """Dotted name -> file of every module under `package_dir` (a package folder)."""
    names = {}
    for path in sorted(package_dir.rglob("*.py")):
        parts = list(path.relative_to(package_dir.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        names[".".join(parts)] = path
    return names


def imports_of(module: str, path: Path, known_modules: set[str], root: Path = REPO) -> list[Import]:
    """Every import in `path`, at any depth (lazy imports inside functions included), with
    relative imports resolved against `module`."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        where = f"{path.relative_to(root)}:{getattr(node, 'lineno', 0)}"
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, where) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            for alias in node.names:
                candidate = f"{source}.{alias.name}"
                version = alias.name == "__version__"
                target = candidate if candidate in known_modules or version else source
                found.append(Import(module, target, where))
    return found


@functools.cache
def all_imports() -> tuple[Import, ...]:
    """Each (module, target, line) once, for the core and the plugin."""
    modules = {**module_names(CORE), **module_names(PLUGIN)}
    known = set(modules)
    found = [imp for name, path in modules.items() for imp in imports_of(name, path, known)]
    return tuple(dict.fromkeys(found))


def layer_of(module: str) -> str | None:
    """The layer of a wenlan module by its longest listed prefix; None outside wenlan.
    A package's `__version__` string is a base value whatever the package."""
    if module.endswith(".__version__"):
        return "base" if layer_of(module.rpartition(".")[0]) else None
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        layer = LAYER_OF.get(".".join(parts[:end]))
        if layer is not None:
            return layer
    return None


def under(module: str, *packages: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in packages)


def upward_imports() -> list[Import]:
    """Imports from a lower layer into a higher one (asserted to be none). The plugin
    surface is left out: each of its names resolves to a module of its own layer."""
    found = []
    for imp in all_imports():
        if imp.target == PLUGIN_SURFACE:
            continue
        low, high = layer_of(imp.module), layer_of(imp.target)
        if low and high and LAYERS.index(high) > LAYERS.index(low):
            found.append(imp)
    return found


# The rules ------------------------------------------------------------------------------


def test_every_core_and_plugin_module_has_a_layer():
    modules = [*module_names(CORE), *module_names(PLUGIN)]
    unmapped = [m for m in modules if layer_of(m) is None]
    assert not unmapped, f"modules with no layer in tests/test_layers.py LAYER_OF (and ARCHITECTURE.md): {unmapped}"


def test_no_module_imports_a_higher_layer():
    """The layer order itself: CLI -> application -> engine/models -> data -> base, lazy
    imports included (the plugin surface excepted, see `upward_imports`)."""
    offending = [f"{imp} ({layer_of(imp.module)} -> {layer_of(imp.target)})" for imp in upward_imports()]
    assert not offending, "imports that point up the layers (ARCHITECTURE.md): " + "; ".join(offending)


def test_nothing_below_the_cli_imports_the_cli():
    offending = [
        str(imp)
        for imp in all_imports()
        if under(imp.module, "wenlan_cli") and not under(imp.module, "wenlan_cli.cli", "wenlan_cli.__main__")
        and under(imp.target, "wenlan_cli.cli")
    ]
    assert not offending, "only wenlan_cli/cli/ and __main__.py may import wenlan_cli.cli: " + "; ".join(offending)


def test_models_and_data_never_import_applications_or_the_cli():
    forbidden = tuple(f"wenlan_cli.{p}" for p in ("train", "cli", "search", "report", "eval", "serve", "export", "convert"))
    offending = [
        str(imp)
        for imp in all_imports()
        if under(imp.module, "wenlan_cli.models", "wenlan_cli.data") and under(imp.target, *forbidden)
    ]
    assert not offending, "models/ and data/ may not import train/, cli/, search/, report/, eval/, serve/, export/ or convert/: " + "; ".join(offending)


def test_models_never_import_inference_or_the_api():
    forbidden = ("wenlan_cli.encode", "wenlan_cli.loading", "wenlan_cli.backends", "wenlan_cli.api", "wenlan_cli.tasks")
    offending = [str(imp) for imp in all_imports() if under(imp.module, "wenlan_cli.models") and under(imp.target, *forbidden)]
    assert not offending, "models/ may not import encode, loading, backends, api or tasks: " + "; ".join(offending)


def test_data_imports_nothing_from_the_models_or_above():
    """data/ reads records and turns them into tensors; what it needs of a model (a
    tokenizer to measure captions) its caller passes in (`check_dataset(char_tokenizer=)`)."""
    offending = [
        str(imp)
        for imp in all_imports()
        if under(imp.module, "wenlan_cli.data") and layer_of(imp.target) not in (None, "base", "data")
    ]
    assert not offending, "data/ may import only data/ and the base modules (never models/): " + "; ".join(offending)


def test_base_modules_import_only_base_modules():
    offending = [
        str(imp)
        for imp in all_imports()
        if layer_of(imp.module) == "base" and layer_of(imp.target) not in (None, "base")
    ]
    assert not offending, "errors, config, strict_json, durations, cores and output_paths import nothing above them: " + "; ".join(offending)


def test_the_plugin_imports_only_the_plugin_surface_from_the_core():
    found = [imp for imp in all_imports() if under(imp.module, "wenlan_aic_icc") and under(imp.target, "wenlan_cli")]
    assert any(imp.target == PLUGIN_SURFACE for imp in found)
    offending = [str(imp) for imp in found
                 if imp.target != PLUGIN_SURFACE and imp.module not in PLUGIN_NOT_YET_ON_THE_SURFACE]
    assert not offending, f"the AIC-ICC plugin may import from wenlan only {PLUGIN_SURFACE}: " + "; ".join(offending)
    still = {imp.module for imp in found if imp.target != PLUGIN_SURFACE}
    stale = sorted(PLUGIN_NOT_YET_ON_THE_SURFACE - still)
    assert not stale, f"remove {stale} from PLUGIN_NOT_YET_ON_THE_SURFACE: it imports only {PLUGIN_SURFACE} now"


def test_the_plugin_surface_imports_nothing_at_start_up_and_every_name_resolves():
    """Every `_EXPORTS` entry names a real object; the surface itself imports only
    importlib (and never the CLI), so a plugin's entry point costs nothing to load."""
    import importlib
    import subprocess
    import sys

    surface = importlib.import_module(PLUGIN_SURFACE)
    for name, (module, attribute) in surface._EXPORTS.items():
        value = getattr(surface, name)
        expected = importlib.import_module(module)
        assert value is (expected if attribute is None else getattr(expected, attribute)), name
    assert sorted(dir(surface)) == sorted(surface._EXPORTS)
    targets = {imp.target for imp in all_imports() if imp.module == PLUGIN_SURFACE}
    assert targets <= {"__future__", "importlib"}, targets
    assert not any(under(module, "wenlan_cli.cli") for module, _ in surface._EXPORTS.values())
    code = f"import sys, {PLUGIN_SURFACE}; print(sorted(m for m in sys.modules if m.startswith('wenlan_cli.')))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"['{PLUGIN_SURFACE}']"


def test_the_plugin_surface_refuses_a_name_it_does_not_declare():
    import pytest

    from wenlan_cli import plugin_api

    with pytest.raises(AttributeError, match="a plugin may use only"):
        plugin_api.Pretrainer  # noqa: B018 (internal: not declared)


# The scanner itself ---------------------------------------------------------------------


def test_scanner_resolves_relative_lazy_and_submodule_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("from .sub import leaf\n")
    (pkg / "top.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("")
    (pkg / "sub" / "leaf.py").write_text(
        "import os\nfrom .. import top\nfrom ..top import thing\n\ndef f():\n    from pkg.sub import leaf as again\n"
    )
    modules = module_names(pkg)
    assert sorted(modules) == ["pkg", "pkg.sub", "pkg.sub.leaf", "pkg.top"]
    found = [(i.target, i.where) for i in imports_of("pkg.sub.leaf", modules["pkg.sub.leaf"], set(modules), tmp_path)]
    assert found == [
        ("os", "pkg/sub/leaf.py:1"),
        ("pkg.top", "pkg/sub/leaf.py:2"),
        ("pkg.top", "pkg/sub/leaf.py:3"),
        ("pkg.sub.leaf", "pkg/sub/leaf.py:6"),
    ]
    init = imports_of("pkg", modules["pkg"], set(modules), tmp_path)
    assert [i.target for i in init] == ["pkg.sub.leaf"]


def test_scanner_sees_the_real_tree():
    imports = all_imports()
    edges = {(i.module, i.target) for i in imports}
    assert ("wenlan_cli.__main__", "wenlan_cli.cli") in edges
    assert len({i.module for i in imports if under(i.module, "wenlan_cli")}) >= 80
    assert any(under(i.module, "wenlan_aic_icc") and under(i.target, "wenlan_cli") for i in imports)


def _package(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "wenlan_cli" else parts[0]


def across_applications() -> list[Import]:
    """Application modules importing another application's package (shared code that lives
    in one application, such as engine/checkpoint.py, is reached this way)."""
    return [
        imp
        for imp in all_imports()
        if layer_of(imp.module) == layer_of(imp.target) == "application"
        and "wenlan_cli" not in (imp.module, imp.target)  # the package root is the facade over api.py
        and imp.target != PLUGIN_SURFACE  # the plugin surface is the facade a plugin goes through
        and _package(imp.module) != _package(imp.target)
    ]


if __name__ == "__main__":
    print("# upward: a lower layer imports a higher one")
    for imp in upward_imports():
        print(f"{imp}  ({layer_of(imp.module)} -> {layer_of(imp.target)})")
    print("# across: an application imports another application's package")
    for imp in across_applications():
        print(imp)
