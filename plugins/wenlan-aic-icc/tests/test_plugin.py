"""Plugin discovery: fake tasks registered in-process, broken entry points, no captioner."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import EntryPoint
from pathlib import Path

import pytest
import typer

from wenlan_cli import tasks
from wenlan_cli.cli import main
from wenlan_cli.cli.task_commands import commands_of

PLUGIN = Path(__file__).resolve().parents[1]


@pytest.fixture
def registry(monkeypatch):
    """A fresh task registry (the built-in retrieval only) whose entry points the test sets."""
    monkeypatch.setattr(tasks, "_registry", tasks._Registry())
    tasks.register_task(tasks._builtin_retrieval())
    entry_points: list[EntryPoint] = []
    monkeypatch.setattr(tasks, "_entry_points", lambda: list(entry_points))
    return entry_points


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def fake_captioner(calls: list, name: str = "fake-cap", package: str = "fake-pkg") -> tasks.Task:
    """A task whose hook adds a `finetune-caption` that records its options."""

    def add_commands(app):
        @app.command("finetune-caption")
        def finetune_caption(checkpoint: str = typer.Option(...), steps: int = 1):
            calls.append((name, checkpoint, steps))

    return tasks.Task(name=name, kind="captioning", add_commands=add_commands, package=package, version="9.9")


def test_a_registered_fake_task_adds_finetune_caption_through_its_hook(registry, capsys):
    calls = []
    tasks.register_task(fake_captioner(calls))
    code, _, err = run(capsys, "finetune-caption", "--checkpoint", "ckpt", "--steps", "3")
    assert code == 0, err
    assert calls == [("fake-cap", "ckpt", 3)]
    code, _, err = run(capsys, "finetune-caption", "--checkpoint", "ckpt", "--no-such-option")
    assert code == 2 and "No such option" in err and len(calls) == 1  # the core's usage errors
    code, out, _ = run(capsys, "plugins")
    assert code == 0 and "fake-cap" in out and "fake-pkg" in out and "9.9" in out and "finetune-caption" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "finetune-caption" in out


def test_two_tasks_adding_one_command_are_a_usage_error_naming_both(registry, capsys):
    calls = []
    for name in ("cap-a", "cap-b"):
        tasks.register_task(fake_captioner(calls, name, f"pkg-{name}"))
    code, _, err = run(capsys, "finetune-caption", "--checkpoint", "x")
    assert code == 2 and "cap-a (pkg-cap-a)" in err and "cap-b (pkg-cap-b)" in err and "uninstall" in err
    assert calls == [] and len(err.strip().splitlines()) == 1


def test_a_task_cannot_take_over_a_core_command(registry, capsys):
    def add_commands(app):
        app.command("models")(lambda: print("hijacked"))

    tasks.register_task(tasks.Task(name="greedy", kind="x", add_commands=add_commands, package="greedy-pkg"))
    code, out, err = run(capsys, "models")
    assert code == 0 and "brivl-tiny" in out and "hijacked" not in out
    code, _, err = run(capsys, "plugins")
    assert code == 0 and "greedy" in err and "models" in err and "wenlan already has" in err


def test_without_a_captioning_task_finetune_caption_names_the_package(registry, capsys):
    code, _, err = run(capsys, "finetune-caption", "--checkpoint", "runs/demo")
    assert code == 2
    assert "pip install wenlan-aic-icc" in err and "pip install -e plugins/wenlan-aic-icc" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    code, out, _ = run(capsys, "finetune-caption")
    assert code == 2 and "wenlan-aic-icc" in out
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "finetune-caption" in out and "wenlan-aic-icc" in out


def test_a_broken_entry_point_is_reported_and_other_commands_work(registry, capsys):
    registry.append(EntryPoint(name="broken-task", value="wenlan_no_such_module_xyz:TASK", group=tasks.ENTRY_POINT_GROUP))
    registry.append(EntryPoint(name="aic-icc", value="wenlan_aic_icc.task:TASK", group=tasks.ENTRY_POINT_GROUP))
    code, out, err = run(capsys, "plugins")
    assert code == 0
    assert "broken-task" in err and "wenlan_no_such_module_xyz" in err and "ModuleNotFoundError" in err
    assert "aic-icc" in out and "retrieval" in out  # the working plugin and the built-in task
    code, out, _ = run(capsys, "models")
    assert code == 0 and "brivl-tiny" in out
    code, out, _ = run(capsys, "finetune-caption", "--help")  # the working plugin's command
    assert code == 0 and "--train-top-blocks" in out


def test_a_broken_captioning_plugin_is_named_when_finetune_caption_is_missing(registry, capsys):
    registry.append(EntryPoint(name="broken-task", value="wenlan_no_such_module_xyz:TASK", group=tasks.ENTRY_POINT_GROUP))
    code, _, err = run(capsys, "finetune-caption", "--checkpoint", "x")
    assert code == 2 and "pip install wenlan-aic-icc" in err
    assert "broken-task" in err and "failed to load" in err and len(err.strip().splitlines()) == 1


def test_an_entry_point_whose_object_is_not_a_task_is_reported(registry, capsys):
    registry.append(EntryPoint(name="not-a-task", value="wenlan_aic_icc:__version__", group=tasks.ENTRY_POINT_GROUP))
    code, _, err = run(capsys, "plugins")
    assert code == 0 and "not-a-task" in err and "name" in err


def test_the_declared_entry_point_loads_the_aic_icc_task():
    import tomllib

    declared = tomllib.loads((PLUGIN / "pyproject.toml").read_text())["project"]["entry-points"]["wenlan.tasks"]
    task = EntryPoint(name="aic-icc", value=declared["aic-icc"], group=tasks.ENTRY_POINT_GROUP).load()
    assert task.name == "aic-icc" and task.kind == "captioning"
    assert list(commands_of(task)) == ["finetune-caption", "caption", "score"]  # all through the one hook
    assert {"CIDEr", "METEOR"} <= set(task.metrics)


def test_the_task_module_does_not_import_torch():
    """`wenlan` imports every plugin's entry point at start-up, and the scorer's worker
    processes import the package: both must stay light."""
    code = "import sys, wenlan_aic_icc.task, wenlan_aic_icc.scoring; print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
