"""torchrun with 2 CPU processes (gloo): 2 x B equals 1 x 2B, step by step."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wenlan_cli.models.registry import get_model_config
from wenlan_cli.config import to_dict

ROOT = Path(__file__).resolve().parents[1]


def layernorm_config(path: Path) -> Path:
    """brivl-tiny with a LayerNorm-only backbone and no dropout: the per-process batch
    size then cannot change the math, only the float summation order."""
    config = to_dict(get_model_config("brivl-tiny"))
    config["name"] = "brivl-tiny-ln"
    config["image"]["backbone"] = "test_efficientnet_ln"
    config["image"]["image_size"] = 64
    path.write_text(json.dumps(config))
    return path


def run(args: list[str], nproc: int = 1, timeout: int = 300):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    if nproc > 1:
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}", "-m", "wenlan_cli"]
    else:
        command = [sys.executable, "-m", "wenlan_cli"]
    proc = subprocess.run(command + args, capture_output=True, text=True, env=env, cwd=ROOT, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m["loss"] for m in lines if "loss" in m]


def queues(run_dir: Path) -> dict[str, torch.Tensor]:
    state = torch.load(run_dir / "final" / "training_state.pt", weights_only=True)
    return {k: v for k, v in state["model_rest"].items() if "queue" in k}


@pytest.mark.slow
def test_two_processes_match_one_process_with_the_same_global_batch(synth_dir, tmp_path):
    model = layernorm_config(tmp_path / "ln.json")
    common = ["pretrain", "--model", str(model), "--data-dir", str(synth_dir), "--steps", "5", "--queue-size", "64",
              "--warmup", "2", "--queue-warmup", "0", "--log-every", "1", "--workers", "0", "--seed", "3"]
    run(common + ["--batch-size", "16", "--out", str(tmp_path / "one")])
    run(common + ["--batch-size", "8", "--out", str(tmp_path / "two")], nproc=2)

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 5
    # Same data, same initial weights, same optimizer: only float summation order differs
    # (per-process padding and a two-way gradient all-reduce); tolerance 1e-4 relative.
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    q1, q2 = queues(tmp_path / "one"), queues(tmp_path / "two")
    assert set(q1) == {f"{q}_queue.{k}" for q in ("image", "text") for k in ("features", "pointer", "ids")}
    for key in q1:
        assert torch.allclose(q1[key].float(), q2[key].float(), atol=1e-4), key
    # The keys' (image id, caption hash) rows were gathered with them, in the same order.
    assert torch.equal(q1["image_queue.ids"], q2["image_queue.ids"]) and (q2["image_queue.ids"][: 5 * 16] >= 0).all()
    assert int(q2["image_queue.pointer"]) == (5 * 16) % 64
    # Only rank 0 wrote checkpoints and metrics.
    assert len((tmp_path / "two" / "metrics.jsonl").read_text().splitlines()) == len(
        (tmp_path / "one" / "metrics.jsonl").read_text().splitlines()
    )


@pytest.mark.slow
def test_queue_size_must_be_a_multiple_of_the_global_batch_across_processes(synth_dir, tmp_path):
    env = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node=2", "-m", "wenlan_cli",
         "pretrain", "--data-dir", str(synth_dir), "--batch-size", "16", "--queue-size", "48", "--out", str(tmp_path)],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=300,
    )
    assert proc.returncode != 0
    assert "16 per process x 2 process(es) = 32" in proc.stderr
