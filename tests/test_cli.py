"""The command line end to end on tiny data: pretrain, eval-retrieval, encode, bad input."""

from __future__ import annotations

import io
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from wenlan_cli.cli import main
from wenlan_cli.eval.retrieval import retrieval_metrics

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_help_lists_the_core_commands(capsys):
    code, out, _ = run_cli(capsys, "--help")
    assert code == 0
    for command in ("pretrain", "finetune-caption", "eval-retrieval", "encode", "plugins", "models", "data"):
        assert command in out


def test_pretrain_cli_trains_saves_and_reports_recall(capsys, synth_dir, tmp_path):
    out_dir = tmp_path / "run"
    config = tmp_path / "pretrain.yaml"
    config.write_text("batch-size: 16\nqueue_size: 64\nsteps: 3\nwarmup: 1\nworkers: 0\n", encoding="utf-8")
    code, out, err = run_cli(
        capsys, "pretrain", "--config", config, "--dataset", "synth", "--data-dir", synth_dir, "--out", out_dir,
        "--steps", 4, "--log-every", 1, "--queue-warmup", 2,
    )
    assert code == 0, err
    assert "text->image" in out and "image->text" in out
    recall = json.loads((out_dir / "recall.json").read_text())
    assert set(recall) >= {"i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall"}
    steps = [json.loads(line)["step"] for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[:4] == [1, 2, 3, 4]  # the command line's --steps 4 wins over the file's 3
    # Queue warm-up: two steps of the in-batch loss (near 2 log 16), then the queue loss (near 2 log 65).
    lines = [json.loads(line) for line in (out_dir / "metrics.jsonl").read_text().splitlines()]
    losses = [line["loss"] for line in lines if "loss" in line][:4]
    assert max(losses[:2]) < 2 * math.log(40) < min(losses[2:]), losses
    saved = json.loads((out_dir / "train_config.json").read_text())
    assert saved["batch_size"] == 16 and saved["queue_size"] == 64 and saved["queue_warmup"] == 2


def test_pretrain_rejects_a_queue_that_is_not_a_multiple_of_the_batch(capsys, synth_dir, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--data-dir", synth_dir, "--out", tmp_path, "--batch-size", 16, "--queue-size", 100)
    assert code == 2
    assert "queue size (100) must be a multiple of the global batch" in err and "--queue-size 96" in err


def test_pretrain_refuses_fp16_on_cpu(capsys, synth_dir, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--data-dir", synth_dir, "--out", tmp_path, "--precision", "fp16", "--device", "cpu")
    assert code == 2 and "fp16 needs a GPU" in err


def test_eval_retrieval_matches_recall_recomputed_from_encode(capsys, tiny_run, synth_dir, tmp_path):
    from wenlan_cli.data.sources import load_records

    report = tmp_path / "recall.json"
    code, out, err = run_cli(
        capsys, "eval-retrieval", "--checkpoint", tiny_run.out, "--dataset", "aic-icc", "--data-dir", synth_dir,
        "--split", "val", "--output", report,
    )
    assert code == 0, err
    assert "R@1" in out and "mean" in out
    metrics = json.loads(report.read_text())

    records = load_records("aic-icc", synth_dir, "val")
    split = ["--dataset", "aic-icc", "--data-dir", synth_dir, "--split", "val", "--checkpoint", tiny_run.out]
    assert run_cli(capsys, "encode", *split, "-o", tmp_path / "img.npy")[0] == 0
    assert run_cli(capsys, "encode", *split, "--captions", "-o", tmp_path / "txt.npy")[0] == 0
    images = np.load(tmp_path / "img.npy")
    captions = np.load(tmp_path / "txt.npy")
    manifest = json.loads((tmp_path / "img.manifest.json").read_text())
    assert manifest["rows"] == [r.image_id for r in records] and manifest["skipped"] == []
    caption_manifest = json.loads((tmp_path / "txt.manifest.json").read_text())
    assert caption_manifest["rows"] == [c for r in records for c in r.captions]
    # Owners are recomputed from the caption manifest, independently of the evaluator.
    index = {image_id: i for i, image_id in enumerate(manifest["rows"])}
    owners = torch.tensor([index[image_id] for image_id in caption_manifest["caption_images"]])
    assert images.dtype == np.float32 and np.allclose(np.linalg.norm(images, axis=1), 1, atol=1e-5)
    recomputed = retrieval_metrics(torch.from_numpy(images), torch.from_numpy(captions), owners)
    for key in ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall"):
        assert recomputed[key] == pytest.approx(metrics[key], abs=1e-9), key


def test_encode_folder_to_stdout_when_redirected(tiny_run, synth_dir, tmp_path):
    folder = synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "wenlan_cli", "encode", str(folder), "--checkpoint", str(tiny_run.out), "--workers", "0",
         "--manifest", str(tmp_path / "rows.json")],
        capture_output=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    vectors = np.load(io.BytesIO(proc.stdout))
    files = sorted(folder.glob("*.jpg"))
    assert vectors.shape == (len(files), 256) and vectors.dtype == np.float32
    assert json.loads((tmp_path / "rows.json").read_text())["rows"] == [str(f) for f in files]


def test_encode_refuses_to_write_to_a_terminal(capsys, tiny_run, synth_dir, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    code, _, err = run_cli(capsys, "encode", synth_dir, "--checkpoint", tiny_run.out)
    assert code == 2 and "terminal" in err


def test_encode_stops_on_a_corrupt_image_unless_skip_bad(capsys, tiny_run, tmp_path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.new("RGB", (32, 32), (200, 10, 10)).save(folder / "a.jpg")
    (folder / "b.jpg").write_bytes(b"\xff\xd8\xff garbage")
    out = tmp_path / "v.npy"
    code, _, err = run_cli(capsys, "encode", folder, "--checkpoint", tiny_run.out, "-o", out, "--workers", 0)
    assert code == 1 and "b.jpg" in err and "--skip-bad" in err
    assert not out.exists() and not (tmp_path / "v.manifest.json").exists()
    code, _, err = run_cli(capsys, "encode", folder, "--checkpoint", tiny_run.out, "-o", out, "--workers", 0, "--skip-bad")
    assert code == 0, err
    assert np.load(out).shape == (1, 256)
    manifest = json.loads((tmp_path / "v.manifest.json").read_text())
    assert manifest["rows"] == [str(folder / "a.jpg")] and manifest["skipped"][0]["path"] == str(folder / "b.jpg")


@pytest.mark.parametrize(
    "case, expected",
    [
        ("missing_dir", "does not exist"),
        ("malformed_json", "not valid JSON"),
        ("empty_captions", "caption"),
        ("escaping_path", "leaves"),
    ],
)
def test_bad_data_gives_one_clear_sentence_and_exit_1(capsys, tiny_run, tmp_path, case, expected):
    from wenlan_cli.data.aic_icc import AIC_SPLITS

    layout = AIC_SPLITS["val"]
    release = tmp_path / layout.release
    (release / layout.images).mkdir(parents=True)
    annotations = release / layout.annotations
    entries = [{"url": "u", "image_id": "a.jpg", "caption": ["一只猫"]}]
    if case == "malformed_json":
        annotations.write_text('[{"image_id": "a.jpg", "caption": [', encoding="utf-8")
    else:
        if case == "empty_captions":
            entries[0]["caption"] = []
        if case == "escaping_path":
            entries[0]["image_id"] = "../../etc/passwd"
        annotations.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    data_dir = tmp_path / "nowhere" if case == "missing_dir" else tmp_path
    code, out, err = run_cli(
        capsys, "eval-retrieval", "--checkpoint", tiny_run.out, "--dataset", "aic-icc", "--data-dir", data_dir, "--split", "val"
    )
    assert code == 1
    assert expected in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_debug_shows_the_traceback(tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    proc = subprocess.run(
        [sys.executable, "-m", "wenlan_cli", "--debug", "eval-retrieval", "--checkpoint", str(tmp_path / "none")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_data_synth_command_writes_the_aic_icc_layout(capsys, tmp_path):
    out = tmp_path / "synth"
    code, stdout, err = run_cli(capsys, "data", "synth", out, "--train", 8, "--val", 4, "--test", 2, "--seed", 5)
    assert code == 0, err
    annotations = json.loads((out / "ai_challenger_caption_train_20170902" / "caption_train_annotations_20170902.json").read_text())
    assert len(annotations) == 8 and all(len(a["caption"]) == 5 and a["bbox"] for a in annotations)
    code, _, err = run_cli(capsys, "data", "synth", out)
    assert code == 2 and "not empty" in err


def test_models_and_plugins_commands_list_the_registry(capsys):
    code, out, _ = run_cli(capsys, "models")
    assert code == 0 and "brivl-tiny" in out and "brivl-base" in out
    code, out, _ = run_cli(capsys, "plugins")
    assert code == 0 and "retrieval" in out


def test_the_builtin_retrieval_task_lists_every_dataset_eval_retrieval_reads():
    from wenlan_cli.data.sources import dataset_names
    from wenlan_cli.tasks import _builtin_retrieval

    assert sorted(_builtin_retrieval().datasets) == dataset_names()


def test_unknown_options_and_missing_required_ones_are_usage_errors(capsys):
    code, _, err = run_cli(capsys, "pretrain", "--no-such-option")
    assert code == 2 and "No such option" in err
    code, _, err = run_cli(capsys, "eval-retrieval")
    assert code == 2 and "--checkpoint" in err


def test_encode_inputs_and_manifest_without_a_model(synth_dir, tmp_path):
    """`wenlan encode`'s library steps: what it reads from each kind of input, and the manifest."""
    from wenlan_cli.encode_inputs import collect_inputs, manifest_of

    texts = tmp_path / "t.txt"
    texts.write_text("一只猫\n\n一条狗\n", encoding="utf-8")
    found = collect_inputs(None, texts, None, None, "val", False)
    assert (found.items, found.texts, found.records) == (["一只猫", "一条狗"], True, None)
    captions = collect_inputs(None, None, "synth", str(synth_dir), "val", True)
    assert captions.texts and len(captions.items) == len(captions.caption_images) > len(captions.records)
    folder = tmp_path / "imgs"
    folder.mkdir()
    os.mkfifo(folder / "pipe.jpg")
    found = collect_inputs([folder], None, None, None, "val", False)
    assert found.items == [] and found.not_files == [{"path": str(folder / "pipe.jpg"), "reason": "a FIFO (named pipe), not a regular file"}]
    manifest = manifest_of("ckpt", "onnx", captions, (3, 8), ["a", "b", "c"], [], dataset="synth", split="val")
    assert manifest == {"checkpoint": "ckpt", "backend": "onnx", "kind": "text", "shape": [3, 8], "rows": ["a", "b", "c"],
                        "dataset": "synth", "split": "val", "caption_images": captions.caption_images, "skipped": []}
