"""Options declared once (issue 12): each command's options are the fields of one config
dataclass. Every field has exactly one option and every option a field, `--help` shows the
fields' own defaults, a `--config` file fills the same fields and the command line wins."""

from __future__ import annotations

import dataclasses
import json
import re
import subprocess
import sys
from dataclasses import dataclass

import pytest
import typer

from wenlan_cli.cli import main
from wenlan_cli.config import TrainConfig, to_dict
from wenlan_cli.declared import declared_command, declared_fields, declared_option_names
from wenlan_cli.errors import UsageError
from wenlan_cli.option_spec import Option, option


def click_command(function, name="cmd"):
    app = typer.Typer(add_completion=False)
    app.command(name)(function)
    return typer.main.get_group(app).commands[name]


def declared_commands():
    """(command name, declared function) of every command built from a dataclass."""
    from wenlan_cli.cli.encode import encode
    from wenlan_cli.cli.eval_retrieval import eval_retrieval
    from wenlan_cli.cli.pretrain import pretrain

    from wenlan_cli.cli.classify import classify
    from wenlan_cli.cli.index import index

    from wenlan_cli.cli.search import search

    from wenlan_cli.cli.serve import serve

    from wenlan_cli.cli.data import synth
    from wenlan_cli.cli.data_check import check
    from wenlan_cli.cli.data_convert import convert
    from wenlan_cli.cli.export import onnx
    from wenlan_cli.cli.report import report

    found = [("pretrain", pretrain), ("eval-retrieval", eval_retrieval), ("encode", encode), ("index", index),
             ("classify", classify), ("search", search), ("serve", serve), ("export onnx", onnx),
             ("data check", check), ("data synth", synth), ("data convert", convert),
             ("report", report)]
    try:
        from wenlan_aic_icc.commands import finetune_caption
    except ImportError:  # the plugin is not installed
        return found
    return found + [("finetune-caption", finetune_caption)]


COMMANDS = declared_commands()


@pytest.mark.parametrize("name, function", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_every_field_has_exactly_one_option_and_every_option_a_field(name, function):
    command = click_command(function)
    params = [p.name for p in command.params if p.name not in ("config", "help")]
    assert len(params) == len(set(params))
    assert set(params) == set(declared_option_names(function)), name
    config_cls, specs, _ = function.declared
    by_name = {p.name: p for p in command.params}
    for f, spec in declared_fields(config_cls, specs):
        if spec.config_only:
            assert f.name not in by_name
        elif not spec.flags and not spec.argument:  # the option is named after its field
            assert f"--{f.name.replace('_', '-')}" in by_name[f.name].opts


def help_rows(capsys, monkeypatch, *args) -> dict[str, str]:
    """Each option's row of `--help` (its help and default text), by its first flag."""
    monkeypatch.setenv("COLUMNS", "250")
    assert main([*args, "--help"]) == 0
    rows, current = {}, None
    for line in capsys.readouterr().out.splitlines():
        text = line.strip().strip("│").strip()
        if text.startswith("-"):
            current = text.split()[0]
            rows[current] = text
        elif current and text and not line.startswith("╰"):
            rows[current] += " " + text
        else:
            current = None
    return rows


def shown_default(param):
    """What click shows as `param`'s default: a bool pair names its flag, a lone flag nothing."""
    if param.default is None or (param.is_flag and not param.secondary_opts and not param.default):
        return None
    if param.is_flag:
        return (param.opts if param.default else param.secondary_opts)[0].lstrip("-")
    return str(param.default)


@pytest.mark.parametrize("name, function", COMMANDS, ids=[c for c, _ in COMMANDS])
def test_help_shows_each_field_s_own_default(capsys, monkeypatch, name, function):
    rows = help_rows(capsys, monkeypatch, *name.split())
    config_cls, specs, more = function.declared
    defaults = {f.name: f.default for f in dataclasses.fields(config_cls)}
    defaults.update({f.name: f.default for cls in more for f in dataclasses.fields(cls)})
    for param in click_command(function).params:
        if param.name in ("config", "help") or param.param_type_name == "argument":
            continue
        (row,) = [rows[flag] for flag in param.opts if flag in rows]
        if defaults[param.name] is dataclasses.MISSING:
            assert param.default is None and "[default:" not in row  # required: here or in --config
            continue
        assert param.default == defaults[param.name], param.name
        shown = shown_default(param)
        if shown is None:
            assert "[default:" not in row, row
        else:
            assert f"[default: {shown}]" in row, row


def test_pretrain_help_has_its_panels_in_order(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "120")
    assert main(["pretrain", "--help"]) == 0
    out = capsys.readouterr().out
    panels = re.findall(r"╭─ ([A-Z][a-z ]+) ─", out)
    assert panels == ["Options", "Run", "Model and loss", "Data", "Optimisation", "Switches", "Scale and robustness"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    captured = capsys.readouterr()
    return code, captured.err


def test_pretrain_takes_a_config_file_value_and_the_command_line_wins(capsys, tmp_path):
    config = tmp_path / "run.json"
    config.write_text(json.dumps({"batch-size": 0, "keep": 0}), encoding="utf-8")
    code, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o")
    assert code == 2 and "--batch-size must be at least 1" in err  # the file's value is used
    code, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o", "--batch-size", 8)
    assert code == 2 and "--keep must be at least 1" in err  # --batch-size 8 won; the file's keep is next
    assert not (tmp_path / "o").exists()


# (command, --config file, the same option on the command line, the error with the file's
# value, the error once the command line overrides it: the file's next bad value)
CONFIG_CASES = [
    ("pretrain", {"batch-size": 0, "keep": 0}, ["--batch-size", "8"], "--batch-size must be at least 1", "--keep must be at least 1"),
    ("eval-retrieval", {"checkpoint": "NONE", "batch_size": 0, "workers": -1}, ["--batch-size", "8"],
     "--batch-size must be at least 1", "--workers must be at least 0"),
    ("encode", {"checkpoint": "NONE", "texts": "NONE", "output": "v.txt", "batch_size": 0}, ["--batch-size", "8"],
     "--batch-size must be at least 1", "--output v.txt should end in .npy"),
    ("index DIR", {"out": "NONE", "batch_size": 0, "workers": -1}, ["--batch-size", "8"],
     "--batch-size must be at least 1", "--workers must be at least 0"),
    ("classify DIR", {"checkpoint": "NONE", "top_k": 0, "batch_size": 0}, ["-k", "3"],
     "-k must be at least 1", "--batch-size must be at least 1"),
    ("search 猫", {"index": "NONE", "top_k": 0, "device": "cuda:7"}, ["-k", "3"], "-k must be at least 1", "--device cuda:7"),
    ("serve", {"index": "NONE", "port": -1, "max_k": 0}, ["--port", "80"], "--port must be at least 0", "--max-k must be at least 1"),
    ("data check", {"model": "nosuch", "data_dir": "NONE"}, ["--model", "brivl-tiny"], "unknown model 'nosuch'",
     "the data folder"),
    ("data synth DIR", {"train": -1, "image_size": 8}, ["--train", "3"], "--train must not be negative",
     "--image-size must be at least 32"),
    ("data convert DIR OUT", {"shard_size": 0, "max_side": 1}, ["--shard-size", "10"], "--shard-size must be at least 1",
     "--max-side must be at least 16"),
    ("report DIR", {"batch_size": 0, "workers": -1}, ["--batch-size", "8"], "--batch-size must be at least 1",
     "--workers must be at least 0"),
]


@pytest.mark.parametrize("command, options, given, first, second", CONFIG_CASES, ids=["-".join(w for w in c[0].split() if w.islower()) for c in CONFIG_CASES])
def test_a_config_file_value_is_used_and_the_command_line_wins(capsys, tmp_path, command, options, given, first, second):
    config = tmp_path / "options.json"
    options = {k: str(tmp_path / "none") if v == "NONE" else v for k, v in options.items()}
    config.write_text(json.dumps(options), encoding="utf-8")
    command = [{"DIR": tmp_path, "OUT": tmp_path / "out"}.get(word, word) for word in command.split()]
    code, err = run_cli(capsys, *command, "--config", config)
    assert code == 2 and err.startswith(f"error: {first}"), err
    code, err = run_cli(capsys, *command, "--config", config, *given)
    assert code in (1, 2) and err.lstrip().startswith(f"error: {second}"), err  # a missing data folder: a failed run


def test_an_unknown_key_in_a_config_file_is_one_sentence_naming_file_and_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("batch_size: 8\nbatchsize: 9\n", encoding="utf-8")
    code, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o")
    assert code == 2 and err.count("\n") == 1
    assert err.startswith(f"error: {config}: unknown key 'batchsize'; known keys: ")


def test_nproc_is_an_option_of_the_launcher_not_a_config_key(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("nproc: 2\n", encoding="utf-8")
    code, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o")
    assert code == 2 and "unknown key 'nproc'" in err
    code, err = run_cli(capsys, "pretrain", "--nproc", 0, "--out", tmp_path / "o")
    assert code == 2 and "--nproc must be at least 1" in err


def test_train_config_json_keeps_its_keys():
    """A resume reads an older run's train_config.json: the saved keys are the fields."""
    assert list(to_dict(TrainConfig())) == [
        "model", "dataset", "data_dir", "out", "steps", "epochs", "batch_size", "lr", "weight_decay", "warmup",
        "grad_clip", "queue_size", "momentum", "temperature", "loss", "mask_false_negatives", "queue_warmup", "seed",
        "device", "workers", "eval_every", "eval_split", "save_every", "keep", "log_every", "max_time", "time_budget",
        "resume", "precision", "grad_checkpointing", "accum_steps", "shuffle_bn", "skip_bad", "pretrained",
        "image_weights", "text_weights", "image_norm_from_config", "trust_remote_code", "image_column", "text_column",
        "synth_train", "synth_val", "synth_test", "synth_seed",
    ]


@pytest.mark.skipif("finetune-caption" not in dict(COMMANDS), reason="the AIC-ICC plugin is not installed")
def test_finetune_caption_takes_a_config_file_and_the_command_line_wins(capsys, tmp_path):
    config = tmp_path / "cap.yaml"
    config.write_text(f"checkpoint: {tmp_path / 'none'}\nlr: -1\nheads: 0\n", encoding="utf-8")
    out = tmp_path / "o"
    code, err = run_cli(capsys, "finetune-caption", "--config", config, "--out", out)
    assert code == 2 and "learning rates must be positive" in err  # the file's lr (and checkpoint) are used
    code, err = run_cli(capsys, "finetune-caption", "--config", config, "--out", out, "--lr", "0.01")
    assert code == 2 and err.startswith("error: --heads must be at least 1")
    code, err = run_cli(capsys, "finetune-caption", "--out", out)
    assert code == 2 and "Missing option '--checkpoint'" in err
    assert not out.exists()


def test_wenlan_starts_without_importing_the_caption_trainer():
    code = ("import sys, io, contextlib\nfrom wenlan_cli.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()): main(['--help'])\n"
            "print(sorted(m for m in ('torch', 'wenlan_aic_icc.finetune') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# The mechanism on a small dataclass -----------------------------------------------------


@dataclass
class Toy:
    name: str = option(help="A name.")
    size: int = option(3, "--size", "-s", help="A size.")
    ratio: float | None = option(None, help="A ratio.")
    loud: bool = option(False, "--loud/--quiet", help="Shout.")
    rare: int = option(7, config_only=True)

    def validate(self) -> None:
        if self.size < 1:
            raise UsageError("--size must be at least 1.")


def run_toy(capsys, *args):
    seen = []

    def body(call, cfg):
        """Toy command."""
        seen.append((cfg, call.explicit()))

    code = main_of(declared_command(body, Toy), [str(a) for a in args])
    return code, seen, capsys.readouterr().err


def main_of(function, args):
    """Run `function` as `wenlan toy ARGS`, errors printed as the core's main() prints them."""
    app = typer.Typer(add_completion=False)
    app.command("toy")(function)
    app.command("other")(lambda: None)
    try:
        typer.main.get_group(app).main(args=["toy", *args], prog_name="wenlan", standalone_mode=False)
        return 0
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except Exception as exc:  # click's usage errors print themselves
        exc.show()
        return exc.exit_code


def test_defaults_then_the_file_then_the_command_line(capsys, tmp_path):
    config = tmp_path / "toy.yaml"
    config.write_text("name: 文澜\nsize: 5\nrare: 9\nloud: true\n", encoding="utf-8")
    code, seen, err = run_toy(capsys, "--config", config, "-s", 6)
    assert code == 0, err
    cfg, explicit = seen[0]
    assert (cfg.name, cfg.size, cfg.ratio, cfg.loud, cfg.rare) == ("文澜", 6, None, True, 9)
    assert explicit == {"name", "size", "rare", "loud"}
    code, seen, err = run_toy(capsys, "--name", "x", "--quiet")
    assert code == 0 and (seen[0][0].loud, seen[0][0].size, seen[0][0].rare) == (False, 3, 7)


def test_a_required_field_is_missing_only_when_neither_gives_it(capsys, tmp_path):
    code, seen, err = run_toy(capsys)
    assert code == 2 and "Missing option '--name'" in err and not seen
    config = tmp_path / "toy.json"
    config.write_text('{"size": 0, "name": "a"}', encoding="utf-8")
    code, seen, err = run_toy(capsys, "--config", config)
    assert code == 2 and err == "error: --size must be at least 1.\n" and not seen
    config.write_text('{"colour": 1}', encoding="utf-8")
    code, _, err = run_toy(capsys, "--config", config, "--name", "a")
    assert code == 2 and err.startswith(f"error: {config}: unknown key 'colour'")


def test_a_field_without_an_option_or_a_union_without_a_cli_type_is_refused():
    @dataclass
    class Bare:
        x: int = 1

    with pytest.raises(TypeError, match="Bare.x declares no option"):
        declared_command(lambda call, cfg: None, Bare)

    @dataclass
    class Either:
        x: int | str = option("auto", help="x")

    with pytest.raises(TypeError, match="cli_type"):
        declared_command(lambda call, cfg: None, Either)
    assert declared_command(lambda call, cfg: None, Bare, specs={"x": Option(help="x")}).declared[0] is Bare


@pytest.mark.parametrize("name", ["pretrain", "eval-retrieval", "data check", "data convert"])
def test_the_dataset_help_names_every_registered_dataset(name):
    """Lists of dataset names in help are written by hand; this keeps them complete."""
    from wenlan_cli.data.convert import SOURCES
    from wenlan_cli.data.sources import dataset_names

    function = dict(COMMANDS)[name]
    config_cls, specs, _ = function.declared
    field = "source" if name == "data convert" else "dataset"
    (spec,) = [spec for f, spec in declared_fields(config_cls, specs) if f.name == field]
    names = SOURCES if name == "data convert" else dataset_names()
    missing = [n for n in names if not re.search(rf"(?<![\w-]){re.escape(n)}(?![\w-])", spec.help)]
    assert not missing, f"{name} --{field.replace('source', 'from')} help lacks {missing}"
