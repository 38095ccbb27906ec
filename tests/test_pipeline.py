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


# encode_images: torch's threads beside the DataLoader workers, and the preallocated rows.


@pytest.fixture
def four_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(4)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("cores, workers, inside", [(4, 1, 3), (4, 3, 1), (2, 5, 1)])
def test_threads_beside_workers_lowers_torch_threads_on_cpu_and_restores_them(
    monkeypatch, four_threads, cores, workers, inside
):
    from wenlan_cli.engine import device as encode

    monkeypatch.setattr(encode, "usable_cores", lambda: cores)
    with encode.threads_beside_workers(torch.device("cpu"), workers):
        assert torch.get_num_threads() == inside
    assert torch.get_num_threads() == 4


def test_threads_beside_workers_restores_threads_when_the_body_raises(monkeypatch, four_threads):
    from wenlan_cli.engine import device as encode

    monkeypatch.setattr(encode, "usable_cores", lambda: 4)
    with pytest.raises(DataError, match="boom"):
        with encode.threads_beside_workers(torch.device("cpu"), 2):
            assert torch.get_num_threads() == 2
            raise DataError("boom")
    assert torch.get_num_threads() == 4


@pytest.mark.parametrize(
    "device, workers, cores",
    [("cpu", 0, 2), ("cuda", 2, 4), ("cuda:0", 3, 2), ("cpu", 1, 16)],  # the last: already below the cap
)
def test_threads_beside_workers_leaves_threads_alone_otherwise(monkeypatch, four_threads, device, workers, cores):
    from wenlan_cli.engine import device as encode

    monkeypatch.setattr(encode, "usable_cores", lambda: cores)
    with encode.threads_beside_workers(torch.device(device), workers):
        assert torch.get_num_threads() == 4
    assert torch.get_num_threads() == 4


def test_usable_cores_is_a_positive_count():
    import os

    from wenlan_cli.cores import usable_cores

    assert 1 <= usable_cores() <= (os.cpu_count() or 1)


class _ThreadRecordingModel(torch.nn.Module):
    """Stands in for BriVL in encode_images: notes torch's thread count at each batch."""

    def __init__(self):
        super().__init__()
        self.config = type("Config", (), {"embed_dim": 3})()
        self.threads = []

    def encode_image(self, images, boxes, box_mask):
        self.threads.append(torch.get_num_threads())
        return torch.nn.functional.normalize(images.mean(dim=(2, 3)), dim=-1)


def test_encode_images_runs_beside_its_workers_with_fewer_threads(tmp_path, monkeypatch, four_threads):
    from wenlan_cli import encode
    from wenlan_cli.engine import device

    monkeypatch.setattr(device, "usable_cores", lambda: 4)
    records = []
    for i in range(3):
        path = tmp_path / f"{i}.png"
        Image.new("RGB", (8, 8), (80 * i, 10, 200)).save(path)
        records.append(ImageTextRecord(str(i), path, []))
    model = _ThreadRecordingModel()
    result = encode.encode_images(model, records, SETTINGS, device=torch.device("cpu"), batch_size=2, workers=1)
    assert model.threads == [3, 3]
    assert torch.get_num_threads() == 4
    assert result.kept == [0, 1, 2] and result.embeddings.shape == (3, 3)
    result = encode.encode_images(model, records, SETTINGS, device=torch.device("cpu"), batch_size=2, workers=0)
    assert model.threads[2:] == [4, 4]


@pytest.fixture(scope="module")
def tiny_model():
    """brivl-tiny, untrained (random weights are enough to compare encodings)."""
    from wenlan_cli.models.registry import create_model, get_model_config

    torch.manual_seed(0)
    config = get_model_config("brivl-tiny")
    model = create_model(config, vocab_size=32, for_training=False)
    return model.eval(), ImageSettings.from_config(config.image)


def _encode_folder(tmp_path, names):
    """Records for `names`: good images are 'g<colour index>.png|jpg', bad ones 'bad_<kind>.jpg'."""
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    cut = tmp_path / "whole.jpg"
    noisy.save(cut)
    records = []
    for name in names:
        path = tmp_path / name
        if name == "bad_empty.jpg":
            path.write_bytes(b"")
        elif name == "bad_text.jpg":
            path.write_text("not an image")
        elif name == "bad_cut.jpg":
            path.write_bytes(cut.read_bytes()[:600])
        else:
            i = int(name[1])
            image = Image.new("RGB", (40 + 7 * i, 30), (40 * i, 255 - 30 * i, 90))
            image.paste((255, 255, 255), (3 * i, 2, 3 * i + 10, 12))
            image.save(path)
        records.append(ImageTextRecord(name, path, []))
    return records


def test_encode_images_skip_bad_rows_equal_encoding_the_good_images_alone(tmp_path, tiny_model):
    from wenlan_cli.encode import encode_images

    model, settings = tiny_model
    names = ["g0.png", "bad_empty.jpg", "g1.jpg", "g2.png", "bad_text.jpg", "bad_cut.jpg", "g3.jpg", "g4.png"]
    records = _encode_folder(tmp_path, names)
    cpu = torch.device("cpu")
    # batch_size 2: one batch half bad, one all bad, two all good.
    mixed = encode_images(model, records, settings, device=cpu, batch_size=2, workers=0, skip_bad=True)
    good = [r for r in records if not r.image_id.startswith("bad")]
    alone = encode_images(model, good, settings, device=cpu, batch_size=3, workers=0)
    assert mixed.kept == [0, 2, 3, 6, 7]
    assert [i for i, _ in mixed.failures] == [1, 4, 5]
    assert all(records[i].image_id in message for i, message in mixed.failures)
    assert alone.kept == list(range(5)) and alone.failures == []
    assert mixed.embeddings.shape == alone.embeddings.shape == (5, model.config.embed_dim)
    assert mixed.embeddings.dtype == alone.embeddings.dtype == torch.float32
    assert torch.allclose(mixed.embeddings, alone.embeddings, atol=1e-5)
    assert torch.allclose(mixed.embeddings.norm(dim=-1), torch.ones(5), atol=1e-5)
    # Every row was written: no stale buffer memory, no two rows the same image.
    assert torch.isfinite(mixed.embeddings).all()
    assert torch.cdist(mixed.embeddings, mixed.embeddings).add(torch.eye(5)).min() > 1e-4
    # Each row is its own image's encoding, whatever batch it came in.
    for row, index in enumerate(mixed.kept):
        single = encode_images(model, [records[index]], settings, device=cpu, batch_size=1, workers=0).embeddings
        assert torch.allclose(mixed.embeddings[row], single[0], atol=1e-5)


def test_encode_images_when_every_image_is_bad(tmp_path, tiny_model):
    from wenlan_cli.encode import encode_images

    model, settings = tiny_model
    records = _encode_folder(tmp_path, ["bad_empty.jpg", "bad_text.jpg", "bad_cut.jpg"])
    result = encode_images(model, records, settings, device=torch.device("cpu"), batch_size=2, workers=0, skip_bad=True)
    assert result.embeddings.shape == (0, model.config.embed_dim) and result.kept == []
    assert [i for i, _ in result.failures] == [0, 1, 2]
    with pytest.raises(DataError, match="bad_empty.jpg"):
        encode_images(model, records, settings, device=torch.device("cpu"), batch_size=2, workers=0)


def test_caption_tokens_are_tokenised_per_batch_in_the_collator_with_the_same_ids(tmp_path):
    """`PairDataset` over `CaptionTokens` hands the collator caption texts; the collator
    tokenises the batch's in one tokenizer call, and the batch equals the one built from
    captions tokenised up front, tensor for tensor."""
    from wenlan_cli.data.pipeline import CaptionText, CaptionTokens

    path = tmp_path / "g.png"
    Image.new("RGB", (8, 8), (10, 200, 30)).save(path)
    captions = [["两个红色的圆形", "AB 12 红"], ["一只猫 在 草地上", "蓝"], ["很长的一句话" * 5]]
    records = [ImageTextRecord(str(i), path, c) for i, c in enumerate(captions)]
    tokenizer = tokenizer_from_vocab(build_char_vocab(c for r in records for c in r.captions))
    calls = []

    class Counting:
        def __call__(self, texts, **options):
            calls.append(list(texts))
            return tokenizer(texts, **options)

    lazy = PairDataset(records, CaptionTokens(records, Counting(), 9), SETTINGS)
    eager = PairDataset(records, [tokenize_all(tokenizer, r.captions, 9) for r in records], SETTINGS)
    pairs = [(0, 1), (2, 0), (1, 0), (0, 0)]
    assert isinstance(lazy[(2, 0)][2], CaptionText) and calls == []  # nothing tokenised per pair
    got = PairCollator(SETTINGS.max_regions, 0)([lazy[p] for p in pairs])
    want = PairCollator(SETTINGS.max_regions, 0)([eager[p] for p in pairs])
    assert calls == [["AB 12 红", "很长的一句话" * 5, "一只猫 在 草地上", "两个红色的圆形"]]
    assert got.keys() == want.keys()
    for name in ("images", "boxes", "box_mask", "input_ids", "attention_mask", "image_ids", "caption_hashes"):
        assert torch.equal(got[name], want[name]), name
    assert got["input_ids"].shape == (4, 9) and got["input_ids"][1].tolist()[-1] == tokenizer.sep_token_id
