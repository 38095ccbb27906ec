"""From records to batches: boxes, tokenising, sampling order, collation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from wenlan_cli.data.pipeline import (
    ImageSettings,
    PairCollator,
    PairDataset,
    PairSampler,
    normalize_images,
    prepare_image,
    region_boxes,
    tokenize_all,
)
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.errors import DataError
from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

SETTINGS = ImageSettings(image_size=64, max_regions=4, grid_size=2, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))


def test_boxes_are_scaled_to_the_square_input_after_the_whole_image_box():
    boxes = region_boxes([[10, 20, 110, 60], [0, 0, 200, 100], [5, 5, 6, 6], [1, 1, 2, 2]], (200, 100), SETTINGS)
    assert boxes.shape == (4, 4)  # whole image + the first max_regions - 1 data boxes
    np.testing.assert_allclose(boxes[0], [0, 0, 64, 64])
    np.testing.assert_allclose(boxes[1], [3.2, 12.8, 35.2, 38.4])
    np.testing.assert_allclose(boxes[2], [0, 0, 64, 64])


def test_without_data_boxes_a_grid_stands_in():
    boxes = region_boxes(None, (50, 50), SETTINGS)
    np.testing.assert_allclose(boxes, [[0, 0, 64, 64], [0, 0, 32, 32], [32, 0, 64, 32], [0, 32, 32, 64]])


def test_prepare_image_resizes_to_uint8_square(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGB", (40, 20), (255, 0, 0)).save(path)
    pixels, boxes = prepare_image(ImageTextRecord("a.png", path, ["红"]), SETTINGS)
    assert pixels.dtype == torch.uint8 and pixels.shape == (3, 64, 64)
    assert pixels[0].min() == 255 and pixels[1].max() == 0
    normalised = normalize_images(pixels[None], SETTINGS.mean, SETTINGS.std)
    assert torch.allclose(normalised[0, 0], torch.full((64, 64), 2.0))


def test_char_tokenizer_round_trips_chinese_and_splits_latin_into_pieces():
    vocab = build_char_vocab(["两个红色圆形", "AB 12 红"])
    tokenizer = tokenizer_from_vocab(vocab)
    ids = tokenizer("红色AB")["input_ids"]
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "红", "色", "a", "##b", "[SEP]"]
    assert tokenizer.convert_ids_to_tokens(tokenizer("蓝")["input_ids"])[1] == "[UNK]"
    assert tokenize_all(tokenizer, ["红色圆形"], max_length=4) == [tokenizer("红色", )["input_ids"]]


def test_sampler_is_deterministic_and_each_epoch_covers_every_image():
    counts = [5] * 10
    a = list(_take(PairSampler(counts, 2, seed=3), 10))
    b = list(_take(PairSampler(counts, 2, seed=3), 10))
    assert a == b
    assert sorted(i for i, _ in a) == list(range(10))
    assert all(0 <= c < 5 for _, c in a)
    assert list(_take(PairSampler(counts, 2, seed=4), 10)) != a


def test_sampler_shards_each_global_batch_contiguously_and_resumes():
    counts = [3] * 12
    single = list(_take(PairSampler(counts, 4, seed=0), 12))
    rank0 = list(_take(PairSampler(counts, 2, seed=0, rank=0, world_size=2), 6))
    rank1 = list(_take(PairSampler(counts, 2, seed=0, rank=1, world_size=2), 6))
    gathered = []
    for step in range(3):
        gathered += rank0[2 * step : 2 * step + 2] + rank1[2 * step : 2 * step + 2]
    assert gathered == single
    resumed = list(_take(PairSampler(counts, 4, seed=0, start_batch=2), 4))
    assert resumed == single[8:12]
    # Into the second epoch too.
    long_run = list(_take(PairSampler(counts, 4, seed=0), 20))
    assert list(_take(PairSampler(counts, 4, seed=0, start_batch=4), 4)) == long_run[16:20]


def test_sampler_refuses_a_dataset_smaller_than_one_global_batch():
    with pytest.raises(DataError, match="fewer than one global batch"):
        PairSampler([1, 1], 2, seed=0, world_size=2)


def test_collator_pads_boxes_and_tokens_and_reports_bad_images(tmp_path):
    good = tmp_path / "g.png"
    Image.new("RGB", (8, 8)).save(good)
    bad = tmp_path / "b.jpg"
    bad.write_bytes(b"not an image")
    records = [ImageTextRecord("g", good, ["红色"], [[1, 1, 4, 4]]), ImageTextRecord("b", bad, ["蓝色的"])]
    dataset = PairDataset(records, [[[2, 7, 3]], [[2, 8, 9, 10, 3]]], SETTINGS)
    batch = PairCollator(SETTINGS.max_regions)([dataset[(0, 0)], dataset[(1, 0)]])
    assert batch["size"] == 1 and len(batch["bad"]) == 1 and "b.jpg" in batch["bad"][0].message
    assert batch["images"].shape == (1, 3, 64, 64)
    assert batch["box_mask"].tolist() == [[True, True, False, False]]
    assert torch.equal(batch["boxes"][0, 2], batch["boxes"][0, 0])  # padding repeats the whole image
    assert batch["input_ids"].tolist() == [[2, 7, 3]]


def _take(sampler, n):
    it = iter(sampler)
    return [next(it) for _ in range(n)]
