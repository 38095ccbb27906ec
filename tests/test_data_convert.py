"""wenlan data convert: shards per split, the index, resumable, never half-written, bad images."""

from __future__ import annotations

import json
import shutil

import pytest
import webdataset

from wenlan_cli.cli import main
from wenlan_cli.data.convert import convert_dataset
from wenlan_cli.data.shards import read_webdataset, resolve_shards
from wenlan_cli.data.sources import load_records
from wenlan_cli.errors import DataError, UsageError


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def test_convert_writes_shards_per_split_with_an_index(capsys, synth_dir, tmp_path):
    out = tmp_path / "shards"
    code, stdout, err = run_cli(capsys, "data", "convert", synth_dir, out, "--from", "aic-icc", "--shard-size", "40")
    assert code == 0, err
    assert "train: 96 samples in 3 shards" in stdout
    index = json.loads((out / "index.json").read_text(encoding="utf-8"))
    assert {s: index["splits"][s]["samples"] for s in index["splits"]} == {"train": 96, "val": 24, "test": 8}
    assert [s["name"] for s in index["splits"]["train"]["shards"]] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    assert [s["samples"] for s in index["splits"]["train"]["shards"]] == [40, 40, 16]
    assert index["options"]["shard_size"] == 40 and index["source"]["from"] == "aic-icc"
    assert index["splits"]["train"]["captions"] == 480 and index["splits"]["train"]["char_counts"]
    assert not (out / ".convert").exists() and not list(out.glob(".*tmp*"))
    # The samples read back equal the source, in order, images byte for byte.
    source = load_records("aic-icc", synth_dir, "val")
    shards = read_webdataset(out, "val")
    assert [(r.image_id, r.captions, r.boxes) for r in source] == [(r.image_id, r.captions, r.boxes) for r in shards]
    assert shards[3].image_source.read_bytes() == source[3].image_path.read_bytes()
    # Any webdataset reader reads them.
    samples = list(webdataset.WebDataset(str(out / "val-000000.tar"), shardshuffle=False))
    assert len(samples) == 24 and json.loads(samples[0]["json"])["id"] == source[0].image_id
    # A second run with the same options has nothing to do.
    code, _, err = run_cli(capsys, "data", "convert", synth_dir, out, "--from", "aic-icc", "--shard-size", "40")
    assert code == 0 and "nothing to do" in err


def test_an_interrupted_convert_keeps_finished_shards_and_ends_identical(synth_dir, tmp_path):
    whole = tmp_path / "whole"
    convert_dataset("aic-icc", synth_dir, whole, shard_size=20, splits=["train"])
    out = tmp_path / "out"
    seen = []

    def interrupt(n):
        seen.append(n)
        if len(seen) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        convert_dataset("aic-icc", synth_dir, out, shard_size=20, splits=["train"], on_sample=interrupt)
    assert not (out / "index.json").exists()
    done = {p.name: p.stat().st_ino for p in out.glob("train-*.tar")}
    assert sorted(done) == ["train-000000.tar", "train-000001.tar"]
    (out / ".train-000002.tar.tmp-99999").write_bytes(b"half a shard")  # a killed run's leftover
    with pytest.raises(UsageError, match="other options"):
        convert_dataset("aic-icc", synth_dir, out, shard_size=30, splits=["train"])
    convert_dataset("aic-icc", synth_dir, out, shard_size=20, splits=["train"])
    assert {p.name: p.stat().st_ino for p in out.glob("train-00000[01].tar")} == done  # kept, not rewritten
    assert not list(out.glob(".*tmp*"))
    for shard in whole.glob("*.tar"):
        assert (out / shard.name).read_bytes() == shard.read_bytes()
    assert json.loads((out / "index.json").read_text())["splits"] == json.loads((whole / "index.json").read_text())["splits"]


def test_a_bad_source_image_is_named_or_skipped_and_counted(capsys, synth_dir, tmp_path):
    src = tmp_path / "src"
    shutil.copytree(synth_dir, src)
    victim = load_records("aic-icc", src, "test")[2].image_path
    victim.write_bytes(b"not an image")
    code, _, err = run_cli(capsys, "data", "convert", src, tmp_path / "a", "--splits", "test")
    assert code == 1 and str(victim) in err and "--skip-bad" in err and "Traceback" not in err
    code, stdout, err = run_cli(capsys, "data", "convert", src, tmp_path / "b", "--splits", "test", "--skip-bad")
    assert code == 0, err
    assert "test: 7 samples in 1 shards, 1 unreadable images left out" in stdout
    assert json.loads((tmp_path / "b" / "index.json").read_text())["splits"]["test"]["skipped"] == 1


def test_max_side_reencodes_and_scales_the_boxes(synth_dir, tmp_path):
    convert_dataset("aic-icc", synth_dir, tmp_path / "s", shard_size=100, max_side=64, splits=["test"])
    source, shards = load_records("aic-icc", synth_dir, "test"), read_webdataset(tmp_path / "s", "test")
    assert shards[0].image_source.load().size == (64, 64)  # from 128 x 128
    assert sum(shards[0].boxes, []) == pytest.approx([v / 2 for box in source[0].boxes for v in box])


def test_a_folder_of_images_with_caption_files(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for name in ("a", "sub/b"):
        Image.new("RGB", (20, 20), "red").save(folder / f"{name}.png")
    (folder / "a.txt").write_text("一只猫\n\n一只小猫\n", encoding="utf-8")
    convert_dataset("folder", folder, tmp_path / "s")
    records = read_webdataset(tmp_path / "s", "train")
    assert [(r.image_id, r.captions) for r in records] == [("a.png", ["一只猫", "一只小猫"]), ("sub/b.png", [])]


def test_shard_sources_are_checked_in_one_sentence(tmp_path, synth_dir):
    with pytest.raises(DataError, match="has no index.json"):
        resolve_shards(synth_dir, "train")
    convert_dataset("aic-icc", synth_dir, tmp_path / "s", shard_size=50, splits=["train", "val"])
    with pytest.raises(DataError, match="has no split 'test'; it has: train, val"):
        resolve_shards(tmp_path / "s", "test")
    # A pattern names the train shards; the val split comes from the index beside them.
    pattern = str(tmp_path / "s" / "train-{000000..000001}.tar")
    assert resolve_shards(pattern, "train").samples == 96
    assert resolve_shards(pattern, "val").samples == 24
    with pytest.raises(DataError, match="train-000002.tar .* does not exist"):
        resolve_shards(str(tmp_path / "s" / "train-{000000..000002}.tar"), "train")
    with pytest.raises(UsageError, match="not empty and holds no conversion"):
        convert_dataset("aic-icc", synth_dir, synth_dir)
