"""Several machines on shards: two torchrun nodes x 1 process (c10d rendezvous on
127.0.0.1) train as one process with the double batch does."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from wenlan_cli.config import to_dict
from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.models.registry import get_model_config

ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, HF_HUB_OFFLINE="1", OMP_NUM_THREADS="1")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def losses(run_dir: Path) -> list[float]:
    lines = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [m["loss"] for m in lines if "loss" in m]


@pytest.mark.slow
def test_two_nodes_of_one_process_match_one_process_with_the_double_batch(synth_dir, tmp_path):
    shards = tmp_path / "shards"
    convert_dataset("aic-icc", synth_dir, shards, shard_size=20, splits=["train", "val"])
    # brivl-tiny with a LayerNorm backbone: the per-process batch size changes only the float summation order.
    config = to_dict(get_model_config("brivl-tiny"))
    config.update(name="brivl-tiny-ln")
    config["image"].update(backbone="test_efficientnet_ln", image_size=64)
    model = tmp_path / "ln.json"
    model.write_text(json.dumps(config))
    common = ["pretrain", "--model", str(model), "--dataset", "webdataset", "--data-dir", str(shards), "--steps", "4",
              "--queue-size", "64", "--warmup", "2", "--queue-warmup", "0", "--log-every", "1", "--eval-every", "0",
              "--workers", "0", "--seed", "3"]
    single = subprocess.run([sys.executable, "-m", "wenlan_cli", *common, "--batch-size", "16", "--out", str(tmp_path / "one")],
                            env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=400)
    assert single.returncode == 0, single.stderr[-3000:]

    endpoint = f"127.0.0.1:{free_port()}"
    node = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
            "--rdzv-endpoint", endpoint, "--rdzv-id", "wenlan-test", "-m", "wenlan_cli", *common, "--batch-size", "8",
            "--out", str(tmp_path / "two")]
    nodes = [subprocess.Popen(node, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [proc.communicate(timeout=500)[1] for proc in nodes]
    assert [proc.returncode for proc in nodes] == [0, 0], errors[0][-3000:] + errors[1][-3000:]

    one, two = losses(tmp_path / "one"), losses(tmp_path / "two")
    assert len(one) == len(two) == 4
    for a, b in zip(one, two):
        assert b == pytest.approx(a, rel=1e-4)
    q1 = torch.load(tmp_path / "one" / "final" / "training_state.pt", weights_only=True)["model_rest"]
    q2 = torch.load(tmp_path / "two" / "final" / "training_state.pt", weights_only=True)["model_rest"]
    # The same pairs, gathered in the same order: identical ids in the queues.
    assert torch.equal(q1["image_queue.ids"], q2["image_queue.ids"])
    assert torch.allclose(q1["image_queue.features"].float(), q2["image_queue.features"].float(), atol=1e-4)
