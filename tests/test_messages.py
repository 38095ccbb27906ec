"""Every failure is one sentence, never a raw exception (issue 14, section 5)."""

from __future__ import annotations

import json
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from wenlan_cli.cli import main
from wenlan_cli.data.aic_icc import AIC_SPLITS
from wenlan_cli.data.fields import MAX_CAPTION_CHARS
from wenlan_cli.data.readers import read_split
from wenlan_cli.errors import CheckpointError, DataError
from wenlan_cli.engine.checkpoint import load_training_state

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_sentence(err: str) -> bool:
    return err.startswith("error: ") and err.count("\n") == 1 and "Traceback" not in err


@pytest.fixture
def photos(synth_dir, tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    val = AIC_SPLITS["val"]
    for i, src in enumerate(sorted((synth_dir / val.release / val.images).glob("*.jpg"))[:3]):
        shutil.copy(src, folder / f"p{i}.jpg")
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("command", ["encode", "index", "search", "eval-retrieval"])
def test_device_cuda_without_a_gpu_is_one_sentence(capsys, tiny_run, photos, tmp_path, command):
    args = {
        "encode": ["encode", photos, "--checkpoint", tiny_run.out, "-o", tmp_path / "v.npy"],
        "index": ["index", photos, "--out", tmp_path / "idx", "--checkpoint", tiny_run.out],
        "search": ["search", "红色的圆", "--index", tmp_path / "idx"],
        "eval-retrieval": ["eval-retrieval", "--checkpoint", tiny_run.out],
    }[command]
    code, _, err = run_cli(capsys, *args, "--device", "cuda")
    assert code == 2 and one_sentence(err), err
    assert "--device cuda was asked for but no GPU is available" in err


def test_device_names_torch_does_not_serve_are_refused_naming_the_option(capsys, tmp_path):
    code, _, err = run_cli(capsys, "search", "猫", "--index", tmp_path, "--device", "tpu")
    assert code == 2 and err == "error: --device must be auto, cpu, cuda or cuda:N, not 'tpu'.\n"


def test_outputs_that_are_folders_or_inside_files_are_one_sentence(capsys, tiny_run, photos, tmp_path):
    folder = tmp_path / "vectors.npy"
    folder.mkdir()
    code, _, err = run_cli(capsys, "encode", photos, "--checkpoint", tiny_run.out, "-o", folder)
    assert code == 2 and one_sentence(err) and "is a folder; give the path of a file" in err
    plain = tmp_path / "plain.txt"
    plain.write_text("x")
    code, _, err = run_cli(capsys, "eval-retrieval", "--checkpoint", tiny_run.out, "-o", plain / "m.json")
    assert code == 2 and one_sentence(err) and f"{plain} is a file, so nothing can be written inside it" in err


def test_a_closed_pipe_ends_encode_quietly(tiny_run, tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("\n".join(f"第{i}张红色的圆" for i in range(600)), encoding="utf-8")  # 600 x 256 floats
    proc = subprocess.Popen(
        [sys.executable, "-m", "wenlan_cli", "encode", "--texts", str(texts), "--checkpoint", str(tiny_run.out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"),
    )
    assert proc.stdout.read(10) == b"\x93NUMPY\x01\x00v\x00"[:10]
    proc.stdout.close()  # like `| head -c 10`
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) in (0, 141)
    assert err.strip() == "", err


def test_eval_retrieval_skip_bad_leaves_unreadable_images_out(capsys, tiny_run, synth_dir, tmp_path):
    val = AIC_SPLITS["val"]
    data = tmp_path / "data"
    shutil.copytree(synth_dir / val.release, data / val.release)
    first = sorted((data / val.release / val.images).glob("*.jpg"))[0]
    first.write_bytes(b"not a jpeg")
    args = ["eval-retrieval", "--checkpoint", tiny_run.out, "--dataset", "aic-icc", "--data-dir", data]
    code, _, err = run_cli(capsys, *args)
    last = err.splitlines()[-1]
    assert code == 1 and last.startswith("error: ") and "Traceback" not in err
    assert "pass --skip-bad" in last and first.name in last
    code, _, err = run_cli(capsys, *args, "--skip-bad", "-o", tmp_path / "m.json")
    assert code == 0, err
    assert f"skipped" in err and first.name in err
    metrics = json.loads((tmp_path / "m.json").read_text())
    assert metrics["skipped_images"] == 1 and metrics["num_images"] == 23 and metrics["num_texts"] == 23 * 5


class _Payload:
    pass


def test_a_pickled_training_state_never_suggests_weights_only_false(tiny_run, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(tiny_run.out / "final", copy)
    torch.save({"step": _Payload()}, copy / "training_state.pt")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as error:
            load_training_state(copy)
    message = str(error.value)
    assert "weights_only" not in message and "\n" not in message
    assert re.search(r"holds Python objects \([\w.]*_Payload\) besides tensors", message), message
    assert not [w for w in caught if issubclass(w.category, UserWarning)]
    with open(copy / "training_state.pt", "wb") as handle:  # a plain pickle, not torch's zip
        pickle.dump({"step": 1}, handle)
    with pytest.raises(CheckpointError, match="^[^\n]*$"):
        load_training_state(copy)


def test_config_errors_name_the_file_once(capsys, tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("lr: abc\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o")
    assert code == 2 and err == f"error: {config}: lr must be a number, not 'abc'.\n"
    config.write_text("lr: [1\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "pretrain", "--config", config, "--out", tmp_path / "o")
    assert code == 2 and one_sentence(err) and err.count(str(config)) == 1 and "line 2, column 1" in err
    model = tmp_path / "m.json"
    model.write_text('{"embed_dim": "wide"}', encoding="utf-8")
    code, _, err = run_cli(capsys, "pretrain", "--model", model, "--out", tmp_path / "o")
    assert code == 2 and err == f"error: model config {model}: embed_dim must be an integer, not 'wide'.\n"
    code, _, err = run_cli(capsys, "pretrain", "--config", tmp_path, "--out", tmp_path / "o")
    assert code == 2 and err == f"error: config file {tmp_path} cannot be read (is a directory).\n"


def test_a_missing_tokenizer_is_one_sentence_exit_2(capsys, tiny_run, photos, tmp_path):
    copy = tmp_path / "ck"
    shutil.copytree(tiny_run.out / "final", copy)
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (copy / name).unlink(missing_ok=True)
    code, _, err = run_cli(capsys, "encode", photos, "--checkpoint", copy, "-o", tmp_path / "v.npy")
    assert code == 2 and one_sentence(err), err
    assert err == f"error: {copy} has no readable tokenizer (its tokenizer files, such as tokenizer.json or vocab.txt, are missing or damaged).\n"


def test_the_unknown_dataset_message_lists_synth(capsys, tmp_path):
    code, _, err = run_cli(capsys, "eval-retrieval", "--checkpoint", tmp_path, "--dataset", "coco")
    assert code == 2 and one_sentence(err)
    assert "unknown dataset 'coco'; choose one of: aic-icc, brivl-jsonl, " in err and "synth" in err


def test_entries_of_an_encode_folder_that_are_not_files_are_listed_as_skipped(capsys, tiny_run, photos, tmp_path):
    (photos / "loop.jpg").symlink_to(photos / "loop.jpg")
    os.mkfifo(photos / "pipe.jpg")
    outside = tmp_path / "outside"
    outside.mkdir()
    shutil.copy(photos / "p0.jpg", outside / "o.jpg")
    (photos / "linked").symlink_to(outside, target_is_directory=True)
    out = tmp_path / "v.npy"
    code, _, err = run_cli(capsys, "encode", photos, "--checkpoint", tiny_run.out, "-o", out)
    assert code == 0, err
    text = " ".join(err.split())
    assert f"skipped {photos / 'loop.jpg'}: a broken or looping symbolic link" in text
    assert f"skipped {photos / 'pipe.jpg'}: a FIFO (named pipe), not a regular file" in text
    assert f"skipped {photos / 'linked'}: a symbolic link to a folder, not followed" in text
    manifest = json.loads(out.with_suffix(".manifest.json").read_text())
    assert manifest["rows"] == [str(photos / f"p{i}.jpg") for i in range(3)]
    assert sorted(Path(s["path"]).name for s in manifest["skipped"]) == ["linked", "loop.jpg", "pipe.jpg"]
    assert np.load(out).shape == (3, 256)


@pytest.mark.parametrize("fmt", ["jsonl", "aic-icc", "csv"])
def test_one_caption_length_rule_for_every_reader(tmp_path, fmt):
    long = "长" * (MAX_CAPTION_CHARS + 1)
    if fmt == "jsonl":
        (tmp_path / "train.jsonl").write_text(json.dumps({"image": "a.jpg", "text": long}, ensure_ascii=False) + "\n", encoding="utf-8")
    elif fmt == "csv":
        (tmp_path / "train.csv").write_text(f"image,text\na.jpg,{long * 2}\n", encoding="utf-8")
    else:
        layout = AIC_SPLITS["train"]
        (tmp_path / layout.release / layout.images).mkdir(parents=True)
        (tmp_path / layout.release / layout.annotations).write_text(
            json.dumps([{"image_id": "a.jpg", "caption": [long]}], ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=f"a caption may have at most {MAX_CAPTION_CHARS:,}") as error:
        read_split(fmt, tmp_path, "train")
    assert "\n" not in str(error.value) and len(str(error.value)) < 300


def test_an_index_built_from_another_folder_is_not_updated_without_rebuild(capsys, tiny_run, photos, tmp_path):
    from wenlan_cli.search.index import load_index

    idx = tmp_path / "idx"
    code, _, err = run_cli(capsys, "index", photos, "--out", idx, "--checkpoint", tiny_run.out, "--workers", 0)
    assert code == 0, err
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(photos / "p0.jpg", other / "q.jpg")
    code, _, err = run_cli(capsys, "index", other, "--out", idx, "--workers", 0)
    assert code == 2 and one_sentence(err), err
    assert f"holds 3 images of {photos.resolve()}, not of {other}; pass --rebuild" in err
    assert len(load_index(idx).rows) == 3  # untouched
    code, _, err = run_cli(capsys, "index", other, "--out", idx, "--workers", 0, "--rebuild", "--checkpoint", tiny_run.out)
    assert code == 0, err
    assert [row.path for row in load_index(idx).rows] == ["q.jpg"]
