"""finetune-caption on webdataset shards (--dataset webdataset): the training split streams
(the core's ShardTrainData, through wenlan_cli.plugin_api), validation is read by byte range."""

from __future__ import annotations

import json

import pytest

from wenlan_aic_icc.finetune import CaptionFinetuner, FinetuneConfig
from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.errors import UsageError

TINY = dict(batch_size=8, eval_every=0, meteor=False, d_model=32, layers=1, heads=2, ff_dim=64, max_len=8, log_every=1,
            workers=0, seed=4)


@pytest.fixture(scope="module")
def shards(tmp_path_factory, cap_data):
    out = tmp_path_factory.mktemp("cap-shards") / "s"
    convert_dataset("aic-icc", cap_data, out, shard_size=16, splits=["train", "val"])
    return out


def losses(out) -> list[float]:
    return [m["loss"] for m in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in m]


@pytest.mark.slow  # two short runs with their validations
def test_finetune_caption_streams_the_training_shards_deterministically(tmp_path, shards, cap_data, pretrain_checkpoint):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.models.tokenizer import build_char_vocab

    runs = []
    for name in ("a", "b"):
        cfg = FinetuneConfig(checkpoint=str(pretrain_checkpoint), dataset="webdataset", data_dir=str(shards),
                             out=str(tmp_path / name), steps=3, char_vocab=True, **TINY)
        tuner = CaptionFinetuner(cfg)
        result = tuner.run()
        assert result.step == 3 and result.scores["step"] == 3
        assert tuner.train_records == []  # nothing of the training split is held
        runs.append(losses(tmp_path / name))
    assert len(runs[0]) == 3 and runs[0] == runs[1]
    # The character vocabulary came from the shards' index: the one the captions give.
    vocab = build_char_vocab(c for r in load_records("synth", cap_data, "train") for c in r.captions)
    assert len(tuner.tokenizer) == len(vocab)


def test_cached_features_need_the_records_that_a_stream_does_not_hold(tmp_path, shards, pretrain_checkpoint):
    cfg = FinetuneConfig(checkpoint=str(pretrain_checkpoint), dataset="webdataset", data_dir=str(shards), out=str(tmp_path),
                         steps=2, freeze_tower=True, cache_features=True, **TINY)
    with pytest.raises(UsageError, match="--cache-features .*--dataset webdataset"):
        CaptionFinetuner(cfg).run()
