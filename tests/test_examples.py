"""The files in examples/ run as documented."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from wenlan_cli.config import build_train_config, load_train_config_file

ROOT = Path(__file__).resolve().parents[1]


def test_pretrain_example_config_is_valid_and_runs(synth_dir, tmp_path):
    from wenlan_cli.train.loop import Pretrainer

    options = load_train_config_file(ROOT / "examples" / "pretrain_tiny.yaml")
    assert yaml.safe_load((ROOT / "examples" / "pretrain_tiny.yaml").read_text())["model"] == "brivl-tiny"
    # The file as shipped, shortened to a few steps on the test data.
    cfg = build_train_config(options, {"data_dir": str(synth_dir), "out": str(tmp_path / "run"), "steps": 3,
                                       "batch_size": 16, "queue_size": 64, "eval_every": 0, "save_every": 0})
    result = Pretrainer(cfg).run()
    assert (result.out / "final" / "model.safetensors").is_file()


def test_encode_and_search_example_finds_results(tiny_run, synth_dir, tmp_path):
    images = synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "encode_and_search.py"), "--checkpoint", str(tiny_run.out),
         "--images", str(images), "--query", "左上角有两个红色圆形", "--query", "一个蓝色三角形", "--work", str(tmp_path), "-k", "3"],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert "左上角有两个红色圆形" in lines and "一个蓝色三角形" in lines
    assert sum(line.strip().startswith(("1.", "2.", "3.")) for line in lines) == 6


def test_python_api_example_ranks_images(tiny_run, synth_dir):
    images = sorted((synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103").glob("*.jpg"))[:4]
    proc = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "python_api.py"), str(tiny_run.out), *map(str, images)],
        capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, HF_HUB_OFFLINE="1"), timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "brivl-tiny" in proc.stdout
    assert sum("->" in line for line in proc.stdout.splitlines()) == 3


def test_python_api_matches_the_command_line_encoder(tiny_run, synth_dir):
    import torch

    import wenlan_cli as wenlan
    from wenlan_cli.data.records import ImageTextRecord
    from wenlan_cli.encode import encode_images
    from wenlan_cli.loading import load_checkpoint

    paths = sorted((synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103").glob("*.jpg"))[:3]
    model, preprocess, _ = wenlan.load(tiny_run.out)
    api = model.encode_image(torch.stack([preprocess(p) for p in paths]))
    loaded = load_checkpoint(tiny_run.out)
    records = [ImageTextRecord(str(p), p, []) for p in paths]
    cli = encode_images(loaded.model, records, loaded.settings, device=torch.device("cpu")).embeddings
    assert torch.allclose(api, cli, atol=1e-5)
