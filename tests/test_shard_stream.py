"""The shard stream: every sample once per epoch across processes and workers, the epoch
boundary, exact resume, determinism, bad shards."""

from __future__ import annotations

import io
import json
from collections import Counter
from pathlib import Path

import pytest
import torch
import webdataset
from PIL import Image

from wenlan_cli.data.prepare import ImageSettings
from wenlan_cli.data.shards import resolve_shards, sample_key, shard_name
from wenlan_cli.data.stream import PairBatcher, ShardStream, stream_loader
from wenlan_cli.errors import DataError
from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab

SETTINGS = ImageSettings(image_size=16, max_regions=2, grid_size=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
CAPTIONS = ["红色的圆形", "蓝色的方块", "绿色的三角形"]


def jpeg(value: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (12, 10), (value % 256, 40, 90)).save(buffer, format="JPEG")
    return buffer.getvalue()


def write_shards(folder: Path, sizes: list[int], split: str = "train") -> str:
    """Shards of the given sizes; sample n has id "img{n}". Returns the brace pattern."""
    folder.mkdir(parents=True, exist_ok=True)
    position = 0
    for number, size in enumerate(sizes):
        with open(folder / shard_name(split, number), "wb") as handle:
            writer = webdataset.TarWriter(handle, mtime=0)
            for _ in range(size):
                meta = {"id": f"img{position}", "captions": CAPTIONS, "boxes": [[1, 1, 8, 8]]}
                writer.write({"__key__": sample_key(position), "jpg": jpeg(position), "json": json.dumps(meta).encode()})
                position += 1
            writer.close()
    return str(folder / f"{split}-{{000000..{len(sizes) - 1:06d}}}.tar")


@pytest.fixture(scope="module")
def tokenizer():
    return tokenizer_from_vocab(build_char_vocab(CAPTIONS))


def make_stream(pattern, tokenizer, *, batch, rank=0, world=1, lanes=8, start=0, seed=3, buffer=8):
    split = resolve_shards(pattern, "train")
    return ShardStream(split, PairBatcher(tokenizer, 16, SETTINGS, seed), batch_size=batch, seed=seed, rank=rank,
                       world_size=world, lanes=lanes, start_batch=start, buffer=buffer)


def take(stream, workers: int, count: int) -> list[dict]:
    loader = stream_loader(stream, workers)
    batches = []
    for batch in loader:
        batches.append(batch)
        if len(batches) == count:
            break
    return batches


def test_one_epoch_sees_every_sample_once_across_two_processes_and_two_workers(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [10, 10, 10, 10, 10, 10, 4])  # 64 samples, uneven shards
    per_rank = 64 // (4 * 2)  # batches per process in one epoch
    seen = Counter()
    streams = [make_stream(pattern, tokenizer, batch=4, rank=r, world=2) for r in range(2)]
    for stream in streams:
        assert stream.batches_per_epoch == per_rank
        for batch in take(stream, 2, per_rank):
            assert batch["size"] == 4 and batch["images"].shape == (4, 3, 16, 16)
            assert set(batch["epochs"]) == {0}
            seen.update(batch["keys"])
    assert len(seen) == 64 and set(seen.values()) == {1}
    # The second epoch again covers every sample once, in another order.
    second = Counter()
    first_order = [k for b in take(streams[0], 2, per_rank) for k in b["keys"]]
    for stream in streams:
        batches = take(stream, 2, 2 * per_rank)[per_rank:]
        assert {e for b in batches for e in b["epochs"]} == {1}
        second.update(k for b in batches for k in b["keys"])
    assert len(second) == 64 and set(second.values()) == {1}
    assert [k for b in take(streams[0], 2, 2 * per_rank)[per_rank:] for k in b["keys"]] != first_order


def test_the_epoch_boundary_neither_repeats_nor_drops_when_batches_straddle_it(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [7, 7, 7])  # 21 samples: 8 lanes of 2 or 3, batches of 8
    stream = make_stream(pattern, tokenizer, batch=8)
    batches = take(stream, 2, 14)
    by_epoch = {0: Counter(), 1: Counter()}
    for batch in batches:
        for key, epoch in zip(batch["keys"], batch["epochs"]):
            if epoch in by_epoch:
                by_epoch[epoch][key] += 1
    assert any(len(set(b["epochs"])) == 2 for b in batches), "a batch straddles the boundary"
    for counts in by_epoch.values():
        assert len(counts) == 21 and set(counts.values()) == {1}


def test_the_order_is_deterministic_per_seed_and_independent_of_the_worker_count(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [9, 9, 9, 9])
    keys = lambda batches: [k for b in batches for k in b["keys"]]  # noqa: E731
    main_process = take(make_stream(pattern, tokenizer, batch=8), 0, 10)
    two_workers = take(make_stream(pattern, tokenizer, batch=8), 2, 10)
    assert keys(main_process) == keys(two_workers)
    assert all(a["input_ids"].equal(b["input_ids"]) and a["images"].equal(b["images"]) for a, b in zip(main_process, two_workers))
    assert keys(take(make_stream(pattern, tokenizer, batch=8, seed=4), 0, 10)) != keys(main_process)


def test_two_processes_see_what_one_process_with_the_double_batch_sees(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [9, 9, 9, 9])
    one = take(make_stream(pattern, tokenizer, batch=8), 0, 9)
    ranks = [take(make_stream(pattern, tokenizer, batch=4, rank=r, world=2), 2, 9) for r in range(2)]
    for k, batch in enumerate(one):
        assert batch["keys"] == ranks[0][k]["keys"] + ranks[1][k]["keys"]
        assert batch["images"].equal(torch.cat([ranks[0][k]["images"], ranks[1][k]["images"]]))


@pytest.mark.parametrize("start", [1, 5, 13])
def test_resume_mid_epoch_continues_exactly_where_the_run_stopped(tmp_path, tokenizer, start):
    pattern = write_shards(tmp_path / "s", [6, 6, 6, 5])  # 23 samples, 8 lanes: epochs end mid-batch
    whole = take(make_stream(pattern, tokenizer, batch=8), 2, 16)
    resumed = take(make_stream(pattern, tokenizer, batch=8, start=start), 2, 16 - start)
    assert [b["keys"] for b in resumed] == [b["keys"] for b in whole[start:]]
    assert all(a["input_ids"].equal(b["input_ids"]) for a, b in zip(resumed, whole[start:]))


def test_a_truncated_shard_is_named_and_its_missing_samples_counted(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [8, 8])
    shard = tmp_path / "s" / shard_name("train", 1)
    split = resolve_shards(pattern, "train")  # counts read before the damage
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 2])
    stream = ShardStream(split, PairBatcher(tokenizer, 16, SETTINGS, 0), batch_size=4, seed=0, buffer=1)
    batches = take(stream, 0, 4)
    bad = [b for batch in batches for b in batch["bad"]]
    assert 0 < len(bad) < 8
    assert all(str(shard) in b.message and "truncated" in b.message for b in bad)
    assert sum(b["size"] for b in batches) + len(bad) == 16


def test_a_sample_without_image_or_captions_is_named_by_shard_and_key(tmp_path, tokenizer):
    folder = tmp_path / "s"
    folder.mkdir()
    with open(folder / "train-000000.tar", "wb") as handle:
        writer = webdataset.TarWriter(handle, mtime=0)
        writer.write({"__key__": "a", "json": json.dumps({"id": "a", "captions": ["猫"]}).encode()})
        writer.write({"__key__": "b", "jpg": jpeg(1), "json": json.dumps({"id": "b", "captions": [" "]}).encode()})
        writer.write({"__key__": "c", "jpg": jpeg(2), "json": json.dumps({"id": "c", "captions": ["狗"]}).encode()})
        writer.close()
    stream = ShardStream(resolve_shards(str(folder / "train-{000000..000000}.tar"), "train"), PairBatcher(tokenizer, 16, SETTINGS, 0),
                         batch_size=3, seed=0, buffer=1)
    batch = take(stream, 0, 1)[0]
    messages = sorted(b.message for b in batch["bad"])
    assert batch["size"] == 1
    assert messages[0].endswith("sample a: the sample has no image (.jpg, .png, .webp...).") and "train-000000.tar" in messages[0]
    assert messages[1].endswith("sample b: the sample has no caption.")


def test_fewer_samples_than_a_global_batch_is_one_sentence(tmp_path, tokenizer):
    pattern = write_shards(tmp_path / "s", [3])
    with pytest.raises(DataError, match="fewer than one global batch"):
        make_stream(pattern, tokenizer, batch=4)


def test_shards_without_an_index_are_counted_and_their_characters_read(tmp_path):
    from wenlan_cli.models.tokenizer import count_chars
    from wenlan_cli.train.shard_data import ShardTrainData, usable_workers

    data = ShardTrainData(write_shards(tmp_path / "s", [5, 4]))
    assert data.images == 9 and [s.samples for s in data.split.shards] == [5, 4]
    assert data.char_counts() == count_chars(CAPTIONS * 9)
    assert [usable_workers(n, 8) for n in (0, 1, 2, 3, 4, 7, 8, 12)] == [0, 1, 2, 2, 4, 4, 8, 8]


def test_a_shard_sample_gives_the_pixels_of_its_image_file(tmp_path):
    """A large JPEG is decoded at reduced scale from a file (Image.draft); its copy in a
    shard, by byte range or from the stream, gives the same pixels and boxes."""
    import numpy as np

    from wenlan_cli.data.images import load_image
    from wenlan_cli.data.prepare import prepare_image_array
    from wenlan_cli.data.records import ImageTextRecord
    from wenlan_cli.data.shards import TarMember, scan_shard
    from wenlan_cli.data.stream import BytesImage

    rng = np.random.default_rng(0)
    buffer = io.BytesIO()
    Image.fromarray(rng.integers(0, 255, (480, 640, 3), dtype=np.uint8)).save(buffer, format="JPEG", quality=90)
    data = buffer.getvalue()
    (tmp_path / "a.jpg").write_bytes(data)
    with open(tmp_path / "train-000000.tar", "wb") as handle:
        writer = webdataset.TarWriter(handle, mtime=0)
        writer.write({"__key__": "000000000", "jpg": data, "json": b'{"captions": ["x"]}'})
        writer.close()
    offset, size = scan_shard(str(tmp_path / "train-000000.tar"))[0][1]["jpg"]
    settings = ImageSettings(image_size=96, max_regions=2, grid_size=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    boxes = [[10, 20, 300, 400]]
    pixels, placed = prepare_image_array(ImageTextRecord("a", tmp_path / "a.jpg", ["x"], boxes), settings)
    full = np.array(load_image(tmp_path / "a.jpg").resize((96, 96), Image.BILINEAR, reducing_gap=None))
    assert not np.array_equal(full, pixels)  # the file's path decoded at reduced scale
    for source in (TarMember(str(tmp_path / "train-000000.tar"), "000000000", offset, size), BytesImage(data, "shard, sample")):
        got, got_boxes = prepare_image_array(ImageTextRecord("a", tmp_path / "a.jpg", ["x"], boxes, image_source=source), settings)
        assert np.array_equal(got, pixels) and np.array_equal(got_boxes, placed)


def test_a_resume_reads_no_sample_it_has_passed(tmp_path, tokenizer, monkeypatch):
    """One lane of 3 shards x 40, a buffer of 4: after 10 batches of 8 (80 samples) a resume
    reads in order from position 83 on, and by byte range the 3 samples the buffer holds;
    nothing of the first shard in the epoch's order."""
    import random

    from wenlan_cli.data import stream as stream_module
    from wenlan_cli.data.stream import replay_buffer

    pattern = write_shards(tmp_path / "s", [40, 40, 40])
    whole = take(make_stream(pattern, tokenizer, batch=8, lanes=1, buffer=4), 0, 15)  # epoch 0 is 15 batches
    stream = make_stream(pattern, tokenizer, batch=8, lanes=1, buffer=4, start=10)
    held, position = replay_buffer(120, 4, random.Random("/".join(map(str, (3, "buffer", 0, 0)))), 80)
    assert position == 83 and len(held) == 3 and min(held) >= 40
    order = [shard.path for shard in stream.epoch_shards(0)]
    Path(order[0]).unlink()
    sequential = []
    real = stream_module.read_shard_range

    def recording(shard, low, high, epoch):
        sequential.append((order.index(shard.path), low, high))
        return real(shard, low, high, epoch)

    monkeypatch.setattr(stream_module, "read_shard_range", recording)
    resumed = take(stream, 0, 5)
    assert [b["keys"] for b in resumed] == [b["keys"] for b in whole[10:]]
    assert all(a["images"].equal(b["images"]) and a["input_ids"].equal(b["input_ids"]) for a, b in zip(resumed, whole[10:]))
    assert sequential == [(2, 3, 40)]  # positions 83..119 in order; the held samples came by byte range
