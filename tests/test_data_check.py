"""wenlan data check: each kind of problem found and counted, --json, --strict."""

from __future__ import annotations

import json
import shutil

import pytest

from wenlan_cli.cli import main
from wenlan_cli.data.check import check_dataset
from wenlan_cli.models.tokenizer import char_tokenizer
from wenlan_cli.data.convert import convert_dataset

TRAIN = "ai_challenger_caption_train_20170902/caption_train_annotations_20170902.json"
VAL = "ai_challenger_caption_validation_20170910/caption_validation_annotations_20170910.json"
TRAIN_IMAGES = "ai_challenger_caption_train_20170902/caption_train_images_20170902"
VAL_IMAGES = "ai_challenger_caption_validation_20170910/caption_validation_images_20170910"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def damaged(synth_dir, tmp_path_factory):
    """The synthetic data with one of each problem planted."""
    root = tmp_path_factory.mktemp("damaged") / "d"
    shutil.copytree(synth_dir, root)
    train = json.loads((root / TRAIN).read_text(encoding="utf-8"))
    val = json.loads((root / VAL).read_text(encoding="utf-8"))
    images, val_images = root / TRAIN_IMAGES, root / VAL_IMAGES
    data = (images / train[0]["image_id"]).read_bytes()
    (images / train[1]["image_id"]).write_bytes(data[: len(data) // 2])  # truncated
    (images / train[2]["image_id"]).write_bytes(data)  # a duplicate of train[0]
    (val_images / val[0]["image_id"]).write_bytes(data)  # leakage: train[0] in val
    (images / train[3]["image_id"]).write_bytes(b"GIF89a garbage")  # unreadable
    train[5]["caption"][0] = "很" * 100  # longer than 80 tokens
    train[6]["bbox"][0] = [100.0, 100.0, 140.0, 120.0]  # past the 128 px edge
    (root / TRAIN).write_text(json.dumps(train, ensure_ascii=False), encoding="utf-8")
    return root, train, val


def test_every_planted_problem_is_found_and_counted(damaged):
    root, train, val = damaged
    report = check_dataset("aic-icc", root, max_length=80, char_tokenizer=char_tokenizer)
    counts = report["splits"]["train"]["counts"]
    assert counts == {"unreadable_images": 1, "truncated_images": 1, "empty_captions": 0, "long_captions": 1,
                      "duplicate_images": 1, "boxes_outside": 1}
    findings = report["splits"]["train"]["findings"]
    assert train[3]["image_id"] in findings["unreadable_images"][0]
    assert train[1]["image_id"] in findings["truncated_images"][0]
    assert findings["duplicate_images"] == [f"{train[2]['image_id']} has the same bytes as {train[0]['image_id']}"]
    assert findings["long_captions"] == [f"{train[5]['image_id']}: caption 1 has 102 tokens (the maximum is 80)"]
    assert findings["boxes_outside"][0].startswith(f"{train[6]['image_id']}: box [100.0, 100.0, 140.0, 120.0]")
    assert report["leakage"] == {"train/val": [f"{train[0]['image_id']} in train = {val[0]['image_id']} in val"]}
    assert sum(report["splits"]["val"]["counts"].values()) == 0
    assert report["problems"] == 6


def test_decode_finds_corrupt_pixels_the_header_misses(damaged):
    root, train, _ = damaged
    import io

    from PIL import Image

    image = root / TRAIN_IMAGES / train[7]["image_id"]
    original = image.read_bytes()
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), "green").save(buffer, format="PNG")
    data = bytearray(buffer.getvalue())
    start = data.index(b"IDAT") + 4
    data[start : start + 8] = b"\x00" * 8  # corrupt pixel data; header and IEND intact
    try:
        image.write_bytes(bytes(data))
        fast = check_dataset("aic-icc", root, splits=["train"], max_length=80, char_tokenizer=char_tokenizer)
        full = check_dataset("aic-icc", root, splits=["train"], max_length=80, decode=True, char_tokenizer=char_tokenizer)
    finally:
        image.write_bytes(original)
    assert not any(train[7]["image_id"] in item for item in fast["splits"]["train"]["findings"]["unreadable_images"])
    assert any(train[7]["image_id"] in item for item in full["splits"]["train"]["findings"]["unreadable_images"])


def test_cli_table_json_and_strict(capsys, damaged, synth_dir, tmp_path):
    root, _, _ = damaged
    code, out, err = run_cli(capsys, "data", "check", "--dataset", "aic-icc", "--data-dir", root)
    assert code == 0, err
    assert "duplicate images" in out and "6 findings" in out and "images shared between train/val" in out
    code, out, _ = run_cli(capsys, "data", "check", "--dataset", "aic-icc", "--data-dir", root, "--json", "--strict")
    assert code == 1 and json.loads(out)["problems"] == 6
    code, out, _ = run_cli(capsys, "data", "check", "--dataset", "aic-icc", "--data-dir", synth_dir, "--strict")
    assert code == 0 and "nothing found" in out
    # Shards are checked the same way.
    convert_dataset("aic-icc", synth_dir, tmp_path / "s", shard_size=50)
    code, out, _ = run_cli(capsys, "data", "check", "--dataset", "webdataset", "--data-dir", tmp_path / "s", "--json", "--strict")
    assert code == 0 and json.loads(out)["splits"]["train"]["images"] == 96


def test_blank_captions_and_images_without_one_are_counted(tmp_path):
    import webdataset
    from PIL import Image

    folder = tmp_path / "s"
    folder.mkdir()
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "blue").save(image)
    with open(folder / "train-000000.tar", "wb") as handle:
        writer = webdataset.TarWriter(handle, mtime=0)
        for key, captions, color in (("a", ["一只猫", " "], 1), ("b", [], 2), ("c", ["狗"], 3)):
            Image.new("RGB", (8, 8), (color, 0, 0)).save(image)
            writer.write({"__key__": key, "png": image.read_bytes(), "json": json.dumps({"id": key, "captions": captions}).encode()})
        writer.close()
    report = check_dataset("webdataset", str(folder / "train-{000000..000000}.tar"), max_length=80, char_tokenizer=char_tokenizer)
    assert report["splits"]["train"]["findings"]["empty_captions"] == ["a: caption 2 is empty", "b: no caption"]


def test_bad_samples_and_truncated_shards_are_findings(tmp_path):
    import webdataset
    from PIL import Image

    folder = tmp_path / "s"
    folder.mkdir()
    image = tmp_path / "x.png"
    Image.new("RGB", (8, 8), "blue").save(image)
    for number in range(2):
        with open(folder / f"train-00000{number}.tar", "wb") as handle:
            writer = webdataset.TarWriter(handle, mtime=0)
            writer.write({"__key__": f"{number}a", "json": json.dumps({"id": "a", "captions": ["猫"]}).encode()})
            for key in ("b", "c", "d"):
                writer.write({"__key__": f"{number}{key}", "png": image.read_bytes(), "json": json.dumps({"id": f"{number}{key}", "captions": ["狗"]}).encode()})
            writer.close()
    data = (folder / "train-000001.tar").read_bytes()
    (folder / "train-000001.tar").write_bytes(data[:3000])  # inside the second sample
    report = check_dataset("webdataset", str(folder / "train-{000000..000001}.tar"), max_length=80, char_tokenizer=char_tokenizer)
    found = report["splits"]["train"]["findings"]["unreadable_images"]
    assert found[0].startswith(f"shard {folder / 'train-000000.tar'}, sample 0a: the sample has no image")
    assert found[1].startswith(f"shard {folder / 'train-000001.tar'} is truncated")
    assert report["splits"]["train"]["images"] == 3
