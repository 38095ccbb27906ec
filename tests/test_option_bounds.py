"""Every numeric option has bounds: a value outside them (or NaN / infinite) is refused
before any work with exit 2 and one sentence naming the option (issue 14, section 4)."""

from __future__ import annotations

import pytest

from wenlan_cli.cli import main
from wenlan_cli.config import ModelConfig, TrainConfig, build_train_config, check_number, from_dict, to_dict
from wenlan_cli.errors import UsageError


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


PRETRAIN_CASES = [
    ("--nproc", "0"), ("--nproc", "-1"),
    ("--warmup", "-1"), ("--save-every", "-1"), ("--eval-every", "-2"),
    ("--max-time", "-5"), ("--max-time", "nan"), ("--max-time", "0"),
    ("--grad-clip", "-1"), ("--grad-clip", "inf"), ("--grad-clip", "nan"),
    ("--lr", "nan"), ("--lr", "inf"), ("--lr", "0"), ("--lr", "-1e-3"),
    ("--weight-decay", "nan"), ("--weight-decay", "inf"), ("--weight-decay", "-0.1"),
    ("--epochs", "nan"), ("--epochs", "inf"), ("--epochs", "-1"),
    ("--workers", "-1"), ("--batch-size", "0"), ("--steps", "0"), ("--keep", "0"), ("--log-every", "0"),
    ("--accum-steps", "0"), ("--queue-size", "0"), ("--momentum", "1"), ("--momentum", "nan"),
    ("--temperature", "nan"), ("--temperature", "0"), ("--synth-train", "0"), ("--synth-val", "-1"),
]


@pytest.mark.parametrize("option, value", PRETRAIN_CASES, ids=[f"{o}={v}" for o, v in PRETRAIN_CASES])
def test_pretrain_refuses_each_out_of_bounds_option_naming_it(capsys, tmp_path, option, value):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "pretrain", "--out", out, "--data-dir", tmp_path / "no-data", option, value)
    assert code == 2, err
    assert err.startswith(f"error: {option} must be") and err.count("\n") == 1, err
    assert "Traceback" not in err and not out.exists()


def test_a_config_file_meets_the_same_rule_as_the_command_line(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lr: .nan\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "run")
    assert code == 2 and "--lr must be a finite number above 0, not nan." in err
    config.write_text("warmup: -3\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "run")
    assert code == 2 and "--warmup must be at least 0, not -3." in err


def test_the_messages_state_the_bound_and_the_value():
    with pytest.raises(UsageError, match=r"^--lr must be a finite number above 0, not inf\.$"):
        TrainConfig(lr=float("inf")).validate()
    with pytest.raises(UsageError, match=r"^--momentum must be at least 0 and below 1, not 1\.5\.$"):
        TrainConfig(momentum=1.5).validate()
    with pytest.raises(UsageError, match=r"^--workers must be at least 0 and at most 256, not -1\.$"):
        build_train_config({}, {"workers": -1})
    check_number("--x", None, 1)  # None is "off / default"
    with pytest.raises(UsageError, match="--x must be an integer, not 1.5"):
        check_number("--x", 1.5, 1, integer=True)


@pytest.mark.parametrize(
    "field, value, message",
    [
        ("embed_dim", 10**9, "embed_dim must be at least 1 and at most 65536, not 1000000000."),
        ("embed_dim", -4, "embed_dim must be at least 1 and at most 65536, not -4."),
        ("image.image_size", 100000, "image.image_size must be at least 16 and at most 4096, not 100000."),
        ("image.region_dim", 0, "image.region_dim must be at least 1"),
        ("image.mlp_hidden_dim", -1, "image.mlp_hidden_dim must be at least 1"),
        ("text.max_length", 0, "text.max_length must be at least 1"),
        ("text.dropout", 1.0, "text.dropout must be at least 0 and below 1, not 1."),
        ("text.bert_config.hidden_size", 10**8, "text.bert_config.hidden_size must be at least 1 and at most 65536"),
        ("temperature", float("nan"), "temperature must be a finite number"),
        ("image.encoder_heads", 7, "must be divisible by image.encoder_heads"),
    ],
)
def test_model_config_sizes_have_sane_bounds_naming_the_field(field, value, message):
    from wenlan_cli.models.registry import get_model_config

    data = to_dict(get_model_config("brivl-tiny"))
    target, *path = field.split(".")
    if path:
        holder = data[target]
        for part in path[:-1]:
            holder = holder[part]
        holder[path[-1]] = value
    else:
        data[target] = value
    config = from_dict(ModelConfig, data)
    with pytest.raises(UsageError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config.validate()


@pytest.mark.parametrize(
    "args, option",
    [
        (["--workers", "-1"], "--workers"),
        (["--batch-size", "0"], "--batch-size"),
        (["--precision", "fp16", "--device", "cpu"], "--precision fp16 needs a GPU"),
        (["--device", "tpu"], "--device must be auto, cpu, cuda or cuda:N, not 'tpu'"),
    ],
)
@pytest.mark.parametrize("command", ["encode", "eval-retrieval", "index", "classify"])
def test_inference_commands_check_their_options_before_any_work(capsys, tmp_path, command, args, option):
    images = tmp_path / "images"
    base = {
        "encode": ["encode", images, "--checkpoint", tmp_path / "none", "-o", tmp_path / "v.npy"],
        "eval-retrieval": ["eval-retrieval", "--checkpoint", tmp_path / "none", "--data-dir", tmp_path / "none"],
        "index": ["index", images, "--out", tmp_path / "idx", "--checkpoint", tmp_path / "none"],
        "classify": ["classify", images, "--checkpoint", tmp_path / "none", "--labels", tmp_path / "none.txt"],
    }[command]
    code, _, err = run_cli(capsys, *base, *args)
    assert code == 2, err
    assert option in err and err.count("\n") == 1, err
    assert not (tmp_path / "idx").exists() and not (tmp_path / "v.npy").exists()


def test_a_model_too_big_for_memory_is_refused_naming_its_largest_size():
    from wenlan_cli.models.registry import create_model, get_model_config
    from wenlan_cli.models.size import check_fits_in_memory, estimate_bytes

    tiny = get_model_config("brivl-tiny")
    needed, _ = estimate_bytes(tiny, vocab_size=500)
    assert 1e6 < needed < 2**30  # a few MB to train: fits anywhere
    check_fits_in_memory(tiny, 500, available=2**30)
    data = to_dict(tiny)
    data["embed_dim"], data["image"]["mlp_hidden_dim"], data["text"]["mlp_hidden_dim"] = 65536, 262144, 262144
    wide = from_dict(ModelConfig, data)
    wide.validate()  # each size within its bound, together far too big
    with pytest.raises(UsageError, match=r"^the model 'brivl-tiny' needs about [\d,.]+ GiB to train but 1\.0 GiB of memory is "
                                         r"available; its largest size is image\.mlp_hidden_dim = 262,144\.$"):
        check_fits_in_memory(wide, 500, available=2**30)
    with pytest.raises(UsageError, match="largest size is"):  # before anything is allocated
        create_model(wide, vocab_size=10**7)


def test_data_synth_image_size_has_an_upper_bound(capsys, tmp_path):
    code, _, err = run_cli(capsys, "data", "synth", tmp_path / "s", "--image-size", "100000")
    assert code == 2 and err == "error: --image-size must be at least 32 and at most 1024, not 100000.\n"
    assert not (tmp_path / "s").exists()


def test_data_synth_refuses_a_dataset_larger_than_the_free_disk(capsys, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    code, _, err = run_cli(capsys, "data", "synth", tmp_path / "s", "--train", "100000000")
    assert code == 2 and err == "error: --train must be at least 0 and at most 10000000, not 100000000.\n"
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**9, 10**9 - 2**20, 2**20))  # 1 MiB free
    code, _, err = run_cli(capsys, "data", "synth", tmp_path / "s", "--train", "5000", "--val", "10", "--test", "10")
    assert code == 2 and "5,020 images of 128 px need about 22 MiB but" in err and "has 1 MiB free" in err and "lower --train or --image-size" in err
    assert not (tmp_path / "s").exists()
