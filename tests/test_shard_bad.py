"""Bad shards for every command that reads them: a truncated tar and a sample without an
image are one sentence naming the shard and the sample, or, with --skip-bad, skipped and
counted (eval-retrieval's metrics, encode's manifest, pretrain's metrics)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import webdataset

from wenlan_cli.cli import main
from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.data.shards import BadSample, read_webdataset, scan_shard_status, shard_name


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def drop_image(shard: Path, position: int) -> str:
    """Rewrite `shard` with its `position`-th sample's image left out; that sample's key."""
    from webdataset.tariterators import group_by_keys, tar_file_iterator

    with open(shard, "rb") as handle:
        samples = list(group_by_keys({**f, "__url__": str(shard)} for f in tar_file_iterator(handle)))
    key = samples[position]["__key__"]
    with open(shard, "wb") as handle:
        writer = webdataset.TarWriter(handle, mtime=0)
        for sample in samples:
            kept = {k: v for k, v in sample.items() if k == "__key__" or not k.startswith("__")}
            if sample["__key__"] == key:
                kept = {k: v for k, v in kept.items() if k in ("__key__", "json")}
            writer.write(kept)
        writer.close()
    return key


@pytest.fixture(scope="module")
def damaged(synth_dir, tmp_path_factory):
    """Shards of the synthetic set (val: 20 + 4 samples) with val sample 3 lacking its image
    and the second val shard cut in half."""
    clean = tmp_path_factory.mktemp("clean") / "s"
    convert_dataset("aic-icc", synth_dir, clean, shard_size=20, splits=["train", "val"])
    out = tmp_path_factory.mktemp("damaged") / "s"
    shutil.copytree(clean, out)
    key = drop_image(out / shard_name("val", 0), 3)
    cut = out / shard_name("val", 1)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2])
    return {"clean": clean, "shards": out, "key": key, "cut": cut}


def test_bad_samples_read_by_byte_range_fail_when_loaded_naming_shard_and_key(damaged):
    records = read_webdataset(damaged["shards"], "val")
    assert len(records) == 24  # the index's count: every sample is a record, good or not
    bad = [r for r in records if isinstance(r.image_source, BadSample)]
    messages = [r.image_source.problem for r in bad]
    first = str(damaged["shards"] / shard_name("val", 0))
    assert messages[0] == f"shard {first}, sample {damaged['key']}: the sample has no image (.jpg, .png, .webp...)."
    lost = [m for m in messages[1:]]
    assert lost and all(m.startswith(f"shard {damaged['cut']} is truncated") and "is lost." in m for m in lost)
    # Whole samples of the cut shard are still read; the lost ones are counted from the index.
    assert sum(1 for r in records if r.image_path == damaged["cut"] and not isinstance(r.image_source, BadSample)) + len(lost) == 4
    # `wenlan data check`'s mode: left out and listed, the truncated shard as one finding.
    listed: list[str] = []
    kept = read_webdataset(damaged["shards"], "val", skip_bad=True, bad=listed)
    assert len(kept) == 19 and len(listed) == 2 and "no image" in listed[0] and "truncated" in listed[1]


def test_eval_retrieval_on_bad_shards_names_them_or_skips_and_counts(capsys, damaged, tiny_run, tmp_path):
    args = ["eval-retrieval", "--checkpoint", tiny_run.checkpoint, "--dataset", "webdataset", "--data-dir", damaged["shards"],
            "--split", "val"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "Traceback" not in err
    assert damaged["key"] in err and "has no image" in err and "--skip-bad" in err
    code, _, err = run_cli(capsys, *args, "--skip-bad", "--output", tmp_path / "m.json")
    assert code == 0, err
    metrics = json.loads((tmp_path / "m.json").read_text())
    lost = 24 - 20 - sum(1 for r in read_webdataset(damaged["shards"], "val") if r.image_path == damaged["cut"] and not isinstance(r.image_source, BadSample))
    assert metrics["skipped_images"] == 1 + lost
    assert any(damaged["key"] in s["error"] for s in metrics["skipped"])


def test_encode_on_bad_shards_lists_what_it_skipped(capsys, damaged, tiny_run, tmp_path):
    args = ["encode", "--checkpoint", tiny_run.checkpoint, "--dataset", "webdataset", "--data-dir", damaged["shards"],
            "--split", "val", "--output", tmp_path / "v.npy"]
    code, _, err = run_cli(capsys, *args)
    assert code == 1 and "has no image" in err and "Traceback" not in err
    code, _, err = run_cli(capsys, *args, "--skip-bad")
    assert code == 0, err
    manifest = json.loads((tmp_path / "v.manifest.json").read_text())
    assert manifest["shape"][0] + len(manifest["skipped"]) == 24
    assert any("no image" in s["error"] for s in manifest["skipped"]) and any("truncated" in s["error"] for s in manifest["skipped"])


@pytest.mark.slow
def test_pretrain_on_a_truncated_training_shard_stops_naming_it_or_counts_with_skip_bad(capsys, damaged, tmp_path):
    shards = tmp_path / "s"
    shutil.copytree(damaged["clean"], shards)
    cut = shards / shard_name("train", 2)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 3])
    args = ["pretrain", "--model", "brivl-tiny", "--dataset", "webdataset", "--data-dir", shards, "--steps", "2",
            "--batch-size", "48", "--queue-size", "96", "--eval-every", "0", "--log-every", "1", "--workers", "0", "--seed", "1"]
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "a")
    assert code == 1 and "Traceback" not in err
    assert f"shard {cut} is truncated" in err and "--skip-bad" in err
    code, _, err = run_cli(capsys, *args, "--out", tmp_path / "b", "--skip-bad")
    assert code == 0, err
    lines = [json.loads(line) for line in (tmp_path / "b" / "metrics.jsonl").read_text().splitlines()]
    # 2 steps of 48 are the whole epoch of 96: every sample the cut shard lost is counted once
    # (the stream's tar reader may also drop the last whole sample before the cut).
    whole = len(scan_shard_status(str(cut))[0])
    assert 0 < whole < 20
    assert max(m.get("skipped_images", 0) for m in lines) in (20 - whole, 21 - whole)


def test_a_truncated_shard_without_an_index_is_named_when_the_stream_reaches_it(tmp_path):
    """Shards named by a pattern, no index.json: a truncated one is counted (its whole
    samples and one for what it lost) instead of refused, and the stream names it, as a
    bad sample the trainer stops on or skips and counts with --skip-bad."""
    from wenlan_cli.data.pipeline import ImageSettings
    from wenlan_cli.data.stream import PairBatcher, stream_loader
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab
    from wenlan_cli.train.shard_data import ShardTrainData

    import io

    from PIL import Image

    folder = tmp_path / "s"
    folder.mkdir()

    def jpeg(value: int) -> bytes:
        buffer = io.BytesIO()
        Image.new("RGB", (12, 10), (value, 40, 90)).save(buffer, format="JPEG")
        return buffer.getvalue()

    for number in range(2):
        with open(folder / shard_name("train", number), "wb") as handle:
            writer = webdataset.TarWriter(handle, mtime=0)
            for i in range(8):
                writer.write({"__key__": f"{number}{i:08d}", "jpg": jpeg(i * 20),
                              "json": json.dumps({"id": f"{number}-{i}", "captions": ["一只猫"]}).encode()})
            writer.close()
    cut = folder / shard_name("train", 1)
    cut.write_bytes(cut.read_bytes()[: cut.stat().st_size // 2 + 100])  # inside a tar block, as a cut download ends
    data = ShardTrainData(str(folder / "train-{000000..000001}.tar"))
    whole = len(scan_shard_status(str(cut))[0])
    assert data.images == 8 + whole + 1
    tokenizer = tokenizer_from_vocab(build_char_vocab(["一只猫"]))
    settings = ImageSettings(image_size=16, max_regions=2, grid_size=1, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    stream = data.stream(PairBatcher(tokenizer, 8, settings, 0), batch_size=data.images, seed=0, rank=0, world_size=1)
    batch = next(iter(stream_loader(stream, 0)))  # the whole epoch in one batch
    assert batch["size"] + len(batch["bad"]) == data.images and batch["bad"]
    assert all(str(cut) in b.message for b in batch["bad"])
    assert any("truncated" in b.message for b in batch["bad"])
