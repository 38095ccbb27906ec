"""Shared fixtures of the captioning tests: tiny synthetic data, a tiny pretrain checkpoint
and one short fine-tuning run, all made here (no hub, no installed data)."""

from __future__ import annotations

import pytest

# The environment (HF_HUB_OFFLINE, an isolated WENLAN_CACHE) is set by the repository's root conftest.py.


@pytest.fixture(scope="session")
def cap_data(tmp_path_factory):
    from wenlan_cli.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("cap-synth"), train=48, val=10, test=4, seed=3)


@pytest.fixture(scope="session")
def pretrain_checkpoint(tmp_path_factory, cap_data):
    """A brivl-tiny pretrain checkpoint after two steps: a real tower and tokenizer."""
    from wenlan_cli.config import TrainConfig
    from wenlan_cli.train.loop import Pretrainer

    out = tmp_path_factory.mktemp("pretrain")
    cfg = TrainConfig(
        model="brivl-tiny", dataset="synth", data_dir=str(cap_data), out=str(out), steps=2, batch_size=16,
        queue_size=64, warmup=1, log_every=1, workers=0, seed=0,
    )
    return Pretrainer(cfg).run().checkpoint


TINY_HEAD = ["--d-model", "32", "--layers", "1", "--heads", "2", "--ff-dim", "64", "--max-len", "24"]


@pytest.fixture(scope="session")
def caption_run(tmp_path_factory, cap_data, pretrain_checkpoint):
    """`wenlan finetune-caption` for a few steps on the tiny data: (run dir, exit code)."""
    from wenlan_cli.cli import main

    out = tmp_path_factory.mktemp("caption-run")
    code = main([
        "finetune-caption", "--checkpoint", str(pretrain_checkpoint), "--dataset", "synth", "--data-dir", str(cap_data),
        "--out", str(out), "--steps", "6", "--batch-size", "8", "--eval-every", "3", "--warmup", "2",
        "--log-every", "2", "--no-meteor", *TINY_HEAD,
    ])
    return out, code
