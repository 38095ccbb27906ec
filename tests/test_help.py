"""First contact (issue 14, section 6): `wenlan --help` lists one short line per command,
flags read as flags, `pretrain --help` shows the real defaults, at 80 and 100 columns."""

from __future__ import annotations

import re

import pytest

from wenlan_cli.cli import main

COMMANDS = ["pretrain", "eval-retrieval", "encode", "index", "search", "classify", "report", "plugins", "models",
            "data", "convert"]


def help_text(capsys, monkeypatch, width, *args):
    monkeypatch.setenv("COLUMNS", str(width))
    code = main([*args, "--help"])
    out, err = capsys.readouterr()
    assert code == 0, err
    return out


@pytest.mark.parametrize("width", [80, 100])
def test_the_command_list_has_one_short_line_per_command(capsys, monkeypatch, width):
    out = help_text(capsys, monkeypatch, width)
    panel = out[out.index("Commands"):]
    rows = [line.strip("│ ").rstrip() for line in panel.splitlines()[1:] if line.startswith("│")]
    names = [row.split()[0] for row in rows]
    assert set(COMMANDS) <= set(names)
    assert all(re.fullmatch(r"[a-z][a-z-]*", name) for name in names), rows  # no continuation lines
    assert all(len(line) <= width for line in out.splitlines())


@pytest.mark.parametrize("width", [80, 100])
@pytest.mark.parametrize("command", [[c] for c in COMMANDS] + [["data", "synth"], ["convert", "brivl"]])
def test_every_help_reads_cleanly(capsys, monkeypatch, width, command):
    out = help_text(capsys, monkeypatch, width, *command)
    assert "<bool>" not in out  # a flag takes no value
    assert all(len(line) <= width for line in out.splitlines())
    assert "[default: " not in out.split("╭")[0]  # no default pasted into the description


def test_pretrain_help_shows_the_real_defaults_once(capsys, monkeypatch):
    out = " ".join(help_text(capsys, monkeypatch, 100, "pretrain").split())
    for option, default in [("--lr", "0.001"), ("--batch-size", "64"), ("--weight-decay", "0.05"), ("--model", "brivl-tiny"),
                            ("--out", "runs/pretrain"), ("--log-every", "10"), ("--precision", "fp32")]:
        assert re.search(re.escape(option) + r" [^[]*\[default: " + re.escape(default) + r"\]", out), option
    assert out.count("[default: 0.001]") == 1
    assert "--skip-bad Skip" in out and "--pretrained --no-pretrained Start" in out  # flags, no value type
    assert "dataset and prints the validation Recall@K" in out  # the docstring reflows


def test_defaults_shown_in_help_do_not_override_a_config_file(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 0\n", encoding="utf-8")  # only the file sets it: the file's value is checked
    code = main(["pretrain", "--config", str(config), "--out", str(tmp_path / "o")])
    assert code == 2 and "--batch-size must be at least 1" in capsys.readouterr().err


def test_arguments_read_as_their_names_in_capitals(capsys, monkeypatch):
    out = help_text(capsys, monkeypatch, 80, "index")
    assert "wenlan index [OPTIONS] {IMAGES_DIR}" in out and "{images_dir}" not in out
    code = main(["index"])
    assert code == 2 and "Missing argument 'IMAGES_DIR'" in capsys.readouterr().err
