"""The caption-training stream over shards (`ShardTrainData` with a captioner's tokenizer and
length, as finetune-caption takes it through wenlan_cli.plugin_api): every sample once per
epoch across workers, one caption a sample drawn per seed and epoch and tokenised as the
file layout's `CaptionTokens` would, the vocabulary from the index, exact resume."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.data.pipeline import CaptionTokens, ImageSettings
from wenlan_cli.data.shards import read_webdataset
from wenlan_cli.data.sources import load_records
from wenlan_cli.data.stream import caption_choice
from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab
from wenlan_cli.train.shard_data import ShardTrainData

SETTINGS = ImageSettings(image_size=32, max_regions=4, grid_size=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
MAX_POSITIONS = 8  # shorter than every synthetic caption: truncation is exercised


@pytest.fixture(scope="module")
def shards(synth_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("caption-shards") / "s"
    convert_dataset("aic-icc", synth_dir, out, shard_size=20, splits=["train", "val"])
    return out


def take(loader, count: int) -> list[dict]:
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            return batches
    return batches


def test_the_vocabulary_comes_from_the_index_as_build_char_vocab_gives_it(shards, synth_dir):
    data = ShardTrainData(str(shards))
    source = load_records("aic-icc", synth_dir, "train")
    assert data.images == len(source) == 96
    assert data.char_vocab() == build_char_vocab(c for r in source for c in r.captions)
    assert data.batches_per_epoch(16) == 6 and data.batches_per_epoch(16, world_size=2) == 3


def test_an_epoch_of_caption_batches_sees_every_sample_once_with_its_drawn_caption(shards):
    data = ShardTrainData(str(shards))
    tokenizer = tokenizer_from_vocab(data.char_vocab())
    captions = {f"{Path(r.image_path).name}:{r.meta['shard_key']}": r.captions for r in read_webdataset(shards, "train")}
    loader = data.loader(tokenizer, MAX_POSITIONS, SETTINGS, batch_size=16, seed=5, workers=2)
    seen = Counter()
    for batch in take(loader, 6):
        assert batch["size"] == 16 and not batch["bad"] and batch["images"].shape == (16, 3, 32, 32)
        assert batch["input_ids"].shape[1] == MAX_POSITIONS
        for row, mask, key, epoch in zip(batch["input_ids"], batch["attention_mask"], batch["keys"], batch["epochs"]):
            assert epoch == 0
            options = captions[key]
            chosen = caption_choice(5, epoch, key, len(options))
            # The ids the file layout's per-pair tokenising gives the same caption.
            expected = CaptionTokens([_Record(options)], tokenizer, MAX_POSITIONS)[0][chosen]
            assert row[mask.bool()].tolist() == expected
            seen[key] += 1
    assert len(seen) == 96 and set(seen.values()) == {1}


def test_caption_batches_are_deterministic_and_resume_exactly(shards):
    data = ShardTrainData(str(shards))
    tokenizer = tokenizer_from_vocab(data.char_vocab())
    whole = take(data.loader(tokenizer, MAX_POSITIONS, SETTINGS, batch_size=16, seed=2, workers=0), 9)
    again = take(data.loader(tokenizer, MAX_POSITIONS, SETTINGS, batch_size=16, seed=2, workers=2), 9)
    resumed = take(data.loader(tokenizer, MAX_POSITIONS, SETTINGS, batch_size=16, seed=2, workers=2, start_batch=4), 5)
    for a, b in zip(whole, again):
        assert a["keys"] == b["keys"] and a["input_ids"].equal(b["input_ids"]) and a["images"].equal(b["images"])
    for a, b in zip(whole[4:], resumed):
        assert a["keys"] == b["keys"] and a["input_ids"].equal(b["input_ids"]) and a["images"].equal(b["images"])
    # Past the epoch boundary (6 batches) the second epoch draws its own order.
    assert {e for b in whole[6:] for e in b["epochs"]} == {1}
    other = take(data.loader(tokenizer, MAX_POSITIONS, SETTINGS, batch_size=16, seed=3, workers=0), 1)
    assert other[0]["keys"] != whole[0]["keys"]


class _Record:
    """The one field `CaptionTokens` reads."""

    def __init__(self, captions: list[str]) -> None:
        self.captions = captions
