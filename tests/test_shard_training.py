"""Training, evaluation and encode on webdataset shards (--dataset webdataset)."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from wenlan_cli.cli import main
from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.engine import checkpoint as ckpt
from wenlan_cli.train.loop import Pretrainer

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


@pytest.fixture(scope="module")
def shards(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("shards") / "s"
    convert_dataset("aic-icc", synth_dir, out, shard_size=20, splits=["train", "val"])
    return out


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def same_weights(a: Path, b: Path) -> None:
    wa, wb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


@pytest.mark.slow
def test_pretrain_on_shards_resumes_bitwise(shards, tmp_path, tiny_config):
    whole = Pretrainer(tiny_config(tmp_path / "a", shards, dataset="webdataset", steps=5, save_every=3, eval_every=0)).run()
    assert whole.step == 5 and whole.metrics["mean_recall"] > 0
    middle = tmp_path / "a" / ckpt.step_name(3)
    assert middle.is_dir()
    resumed = Pretrainer(tiny_config(tmp_path / "b", shards, dataset="webdataset", steps=5, save_every=3, eval_every=0,
                                     resume=str(middle))).run()
    assert resumed.step == 5
    same_weights(tmp_path / "a" / "final", tmp_path / "b" / "final")
    # The vocabulary came from the index's character counts: the same as from the captions.
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.models.tokenizer import build_char_vocab, load_tokenizer

    vocab = build_char_vocab(c for r in load_records("aic-icc", Path(json.loads((shards / "index.json").read_text())["source"]["path"]), "train") for c in r.captions)
    assert len(load_tokenizer(tmp_path / "a" / "final")) == len(vocab)


def test_eval_retrieval_and_encode_read_shards_like_the_source(capsys, shards, synth_dir, tiny_run, tmp_path):
    metrics = {}
    for name, dataset, data_dir in (("source", "aic-icc", synth_dir), ("shards", "webdataset", shards)):
        out = tmp_path / f"{name}.json"
        code, _, err = run_cli(capsys, "eval-retrieval", "--checkpoint", tiny_run.checkpoint, "--dataset", dataset,
                               "--data-dir", data_dir, "--split", "val", "--output", out)
        assert code == 0, err
        metrics[name] = {k: v for k, v in json.loads(out.read_text()).items() if k not in ("dataset",)}
        code, _, err = run_cli(capsys, "encode", "--checkpoint", tiny_run.checkpoint, "--dataset", dataset,
                               "--data-dir", data_dir, "--split", "val", "--output", tmp_path / f"{name}.npy")
        assert code == 0, err
    metrics["source"].pop("checkpoint"), metrics["shards"].pop("checkpoint")
    assert metrics["source"] == metrics["shards"]
    assert np.array_equal(np.load(tmp_path / "source.npy"), np.load(tmp_path / "shards.npy"))


def test_a_missing_shard_folder_is_one_sentence(capsys, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--dataset", "webdataset", "--data-dir", tmp_path / "nowhere", "--out", tmp_path / "run",
                           "--model", "brivl-tiny", "--steps", "2")
    assert code == 1 and "shard folder" in err and "does not exist" in err and "Traceback" not in err


@pytest.mark.slow
def test_sigkill_then_resume_on_shards_is_bitwise_equal(shards, tmp_path):
    def command(out, *extra):
        return [sys.executable, "-m", "wenlan_cli", "pretrain", "--model", "brivl-tiny", "--dataset", "webdataset",
                "--data-dir", str(shards), "--out", str(out), "--steps", "10", "--batch-size", "16", "--queue-size", "64",
                "--warmup", "3", "--save-every", "2", "--log-every", "1", "--eval-every", "0", "--workers", "0", "--seed", "7", *extra]

    def wait_for_step(proc, out: Path, step: int, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while True:
            path = out / "metrics.jsonl"
            lines = path.read_text().splitlines() if path.exists() else []
            if max((json.loads(line).get("step", 0) for line in lines if line.strip()), default=0) >= step:
                return
            assert proc.poll() is None, proc.stderr.read()
            assert time.monotonic() < deadline, "the run did not reach the step in time"
            time.sleep(0.05)

    subprocess.run(command(tmp_path / "reference"), check=True, env=ENV, cwd=ROOT, capture_output=True, timeout=300)
    killed = tmp_path / "killed"
    proc = subprocess.Popen(command(killed), env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for_step(proc, killed, random.Random().randint(3, 8))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.step_checkpoints(killed)
    resumed = subprocess.run(command(killed, "--resume", "auto"), env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    same_weights(tmp_path / "reference" / "final", killed / "final")
