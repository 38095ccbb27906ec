"""Shared fixtures: a small synthetic dataset and one tiny trained checkpoint.

Nothing here touches a network hub: the text tower is trained from scratch on a
character vocabulary and the image backbone is a timm test model without weights.
"""

from __future__ import annotations

import pytest

# The environment (HF_HUB_OFFLINE, an isolated WENLAN_CACHE) is set by the repository's root conftest.py.


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory):
    from wenlan_cli.data.synthetic import write_synthetic_dataset

    return write_synthetic_dataset(tmp_path_factory.mktemp("synth"), train=96, val=24, test=8, seed=1)


def tiny_train_config(out, data_dir, **overrides):
    """A pretrain config small enough for a few-second CPU run."""
    from wenlan_cli.config import TrainConfig

    settings = dict(
        model="brivl-tiny", dataset="synth", data_dir=str(data_dir), out=str(out), steps=6, batch_size=16,
        queue_size=64, warmup=2, log_every=2, workers=0, seed=0,
        # The queue loss from the first step, as these tests expect; tests/test_budget.py
        # covers the default (`auto`).
        queue_warmup=0,
    )
    settings.update(overrides)
    return TrainConfig(**settings)


@pytest.fixture(scope="session")
def tiny_config():
    """The factory above, for tests that train their own short runs."""
    return tiny_train_config


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, synth_dir):
    """One short pretrain run shared by the evaluation, encode and checkpoint tests."""
    from wenlan_cli.train.loop import Pretrainer

    out = tmp_path_factory.mktemp("run")
    result = Pretrainer(tiny_train_config(out, synth_dir)).run()
    return result
