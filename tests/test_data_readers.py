"""Dataset readers on tiny files: AIC-ICC, BriVL jsonl, generic jsonl/csv, the registry, paths."""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest

from wenlan_cli.data.aic_icc import read_aic_icc
from wenlan_cli.data.paths import resolve_inside
from wenlan_cli.data.readers import available_datasets, read_split, register_reader, unregister_reader
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.errors import DataError, UsageError

# The released folder and file names, written out here on purpose so that a
# typo in the reader's table is caught.
RELEASES = {
    "train": (
        "ai_challenger_caption_train_20170902",
        "caption_train_annotations_20170902.json",
        "caption_train_images_20170902",
    ),
    "val": (
        "ai_challenger_caption_validation_20170910",
        "caption_validation_annotations_20170910.json",
        "caption_validation_images_20170910",
    ),
    "test": (
        "ai_challenger_caption_test_a_20180103",
        "caption_test_a_annotations_20180103.json",
        "caption_test_a_images_20180103",
    ),
}


def entry(image_id: str, *captions: str, **extra) -> dict:
    return {"url": f"http://img.example.com/{image_id}", "image_id": image_id,
            "caption": list(captions) or ["一个人在路上"], **extra}


def make_aic(root: Path, split: str = "val", entries=None, raw: str | bytes | None = None,
             images: bool = True) -> Path:
    """Write an AIC-ICC release folder under `root`; return the release folder."""
    release, annotations, image_dir = RELEASES[split]
    folder = root / release
    folder.mkdir(parents=True, exist_ok=True)
    if images:
        (folder / image_dir).mkdir(exist_ok=True)
    if raw is None:
        raw = json.dumps(entries if entries is not None else [entry("a.jpg"), entry("b.jpg")], ensure_ascii=False)
    target = folder / annotations
    if isinstance(raw, bytes):
        target.write_bytes(raw)
    else:
        target.write_text(raw, encoding="utf-8")
    return folder


def aic_error(tmp_path: Path, entries=None, raw=None, **options) -> str:
    make_aic(tmp_path, entries=entries, raw=raw)
    with pytest.raises(DataError) as info:
        read_split("aic-icc", tmp_path, "val", **options)
    message = str(info.value)
    assert "Traceback" not in message and "\n" not in message
    return message


ANN = "caption_validation_annotations_20170910.json"


# ----------------------------------------------------------------- AIC-ICC


@pytest.mark.parametrize("split", ["train", "val", "test"])
def test_aic_reads_each_split_from_the_parent_folder(tmp_path, split):
    folder = make_aic(tmp_path, split, [entry("a.jpg", "一个男人"), entry("b.jpg", "两只狗")])
    records = read_split("aic-icc", tmp_path, split)
    assert [r.image_id for r in records] == ["a.jpg", "b.jpg"]
    assert records[0].captions == ["一个男人"]
    assert records[0].image_path == (folder / RELEASES[split][2] / "a.jpg").resolve()
    assert records[0].image_path.is_absolute()
    assert records[0].boxes is None
    assert records[0].meta == {"url": "http://img.example.com/a.jpg"}


def test_aic_reads_a_release_folder_itself_and_the_validation_alias(tmp_path):
    folder = make_aic(tmp_path, "val")
    assert [r.image_id for r in read_split("aic-icc", folder, "val")] == ["a.jpg", "b.jpg"]
    assert [r.image_id for r in read_aic_icc(tmp_path, "validation")] == ["a.jpg", "b.jpg"]


def test_aic_captions_lose_stray_whitespace_and_newlines(tmp_path):
    captions = ["  一个 人\n在路上  ", "\n两个人\r\n", "\u3000三个人\u3000", "\n", "   ",
                "穿着 T 恤的人", "hello \n\t world", "零\u200b宽"]
    make_aic(tmp_path, entries=[entry("a.jpg", *captions)])
    (record,) = read_split("aic-icc", tmp_path, "val")
    assert record.captions == ["一个人在路上", "两个人", "三个人", "穿着T恤的人", "hello world", "零宽"]


def test_aic_bbox_is_parsed_as_floats(tmp_path):
    make_aic(tmp_path, entries=[entry("a.jpg", bbox=[[1, 2, 30, 40.5], [0, 0, 5, 5]]),
                                entry("b.jpg"), entry("c.jpg", bbox=[])])
    a, b, c = read_split("aic-icc", tmp_path, "val")
    assert a.boxes == [[1.0, 2.0, 30.0, 40.5], [0.0, 0.0, 5.0, 5.0]]
    assert all(isinstance(v, float) for v in a.boxes[0])
    assert b.boxes is None
    assert c.boxes == []


def test_aic_missing_split_names_what_was_looked_for(tmp_path):
    make_aic(tmp_path, "val")
    with pytest.raises(DataError) as info:
        read_split("aic-icc", tmp_path, "train")
    message = str(info.value)
    assert str(tmp_path) in message
    assert "ai_challenger_caption_train_20170902/caption_train_annotations_20170902.json" in message


def test_aic_release_folder_of_another_split_gets_a_hint(tmp_path):
    folder = make_aic(tmp_path, "train")
    with pytest.raises(DataError, match="is the train release; point the data folder at its parent"):
        read_split("aic-icc", folder, "val")


def test_aic_release_folder_without_annotations_or_images(tmp_path):
    (tmp_path / RELEASES["val"][0]).mkdir()
    with pytest.raises(DataError, match=f"has no annotation file {ANN}"):
        read_split("aic-icc", tmp_path, "val")
    make_aic(tmp_path / "other", "val", images=False)
    with pytest.raises(DataError, match="not its image folder caption_validation_images_20170910/"):
        read_split("aic-icc", tmp_path / "other", "val")


def test_aic_unknown_split_is_a_usage_error(tmp_path):
    make_aic(tmp_path)
    with pytest.raises(UsageError, match="unknown AIC-ICC split 'dev'; choose one of: train, val, test"):
        read_split("aic-icc", tmp_path, "dev")


def test_aic_malformed_json_names_file_line_and_column(tmp_path):
    message = aic_error(tmp_path, raw='[{"image_id": "a.jpg",\n "caption": ["x"]}, {"image_id": }]')
    assert ANN in message and "is not valid JSON" in message and "line 2" in message


@pytest.mark.parametrize("raw, expected", [
    ('{"image_id": "a.jpg"}', "holds an object at the top level; expected a JSON list of objects"),
    ('"a string"', "holds a string at the top level"),
    ("", "is empty; expected a JSON list of objects"),
    ("  \n ", "is empty; expected a JSON list of objects"),
    ("[]", "holds an empty list"),
    ('[{"image_id": "a.jpg", "caption": ["x"]}, 3]', "entry 1 holds a number; expected a JSON object"),
    ('[[1, 2]]', "entry 0 holds a list"),
])
def test_aic_wrong_top_level_shapes(tmp_path, raw, expected):
    message = aic_error(tmp_path, raw=raw)
    assert ANN in message and expected in message


def test_aic_non_utf8_file(tmp_path):
    message = aic_error(tmp_path, raw=b'[{"image_id": "a.jpg", "caption": ["\xff\xfe"]}]')
    assert ANN in message and "not valid UTF-8" in message


@pytest.mark.parametrize("bad, expected", [
    ({"caption": ["x"]}, "entry 1: field 'image_id' is missing or null"),
    ({"image_id": None, "caption": ["x"]}, "entry 1: field 'image_id' is missing or null"),
    ({"image_id": 7, "caption": ["x"]}, "entry 1: field 'image_id' must be a string, got a number 7"),
    ({"image_id": "c.jpg"}, "entry 1 (image_id 'c.jpg'): field 'caption' is missing or null"),
    ({"image_id": "c.jpg", "caption": "一个人"}, "entry 1 (image_id 'c.jpg'): field 'caption' must be a list of strings, got a string"),
    ({"image_id": "c.jpg", "caption": ["x", 5]}, "entry 1 (image_id 'c.jpg'): caption[1] must be a string, got a number"),
    ({"image_id": "c.jpg", "caption": ["x", None]}, "caption[1] must be a string, got null"),
    ({"image_id": "c.jpg", "caption": []}, "entry 1 (image_id 'c.jpg'): field 'caption' is an empty list"),
    ({"image_id": "c.jpg", "caption": [" ", "\n", ""]}, "entry 1 (image_id 'c.jpg'): all 3 captions in 'caption' are empty"),
    ({"image_id": "c.jpg", "caption": ["x"], "url": 5}, "field 'url' must be a string, got a number"),
])
def test_aic_bad_fields_name_file_entry_and_field(tmp_path, bad, expected):
    message = aic_error(tmp_path, entries=[entry("a.jpg"), bad])
    assert ANN in message and expected in message


@pytest.mark.parametrize("image_id, expected", [
    ("../secret.jpg", "leaves"),
    ("sub/../../secret.jpg", "leaves"),
    ("/etc/passwd", "is absolute"),
    ("C:\\x.jpg", "is absolute"),
    ("", "the image path is empty"),
    (".", "names the folder"),
])
def test_aic_escaping_image_paths_are_refused(tmp_path, image_id, expected):
    message = aic_error(tmp_path, entries=[entry(image_id)])
    assert ANN in message and "entry 0" in message and expected in message


def test_aic_symlink_out_of_the_image_folder_is_refused(tmp_path):
    folder = make_aic(tmp_path, entries=[entry("link.jpg")])
    outside = tmp_path / "outside.jpg"
    outside.write_bytes(b"x")
    (folder / RELEASES["val"][2] / "link.jpg").symlink_to(outside)
    message = aic_error(tmp_path, entries=[entry("link.jpg")])
    assert "symlink" in message and "entry 0 (image_id 'link.jpg')" in message


def test_aic_duplicate_image_id_names_both_entries(tmp_path):
    message = aic_error(tmp_path, entries=[entry("a.jpg"), entry("b.jpg"), entry("a.jpg")])
    assert ANN in message and "entry 2" in message and "repeats entry 0" in message


@pytest.mark.parametrize("bbox, expected", [
    ([[1, 2, 3]], "bbox[0] must be [x1, y1, x2, y2], got 3 values"),
    ([[5, 2, 3, 4]], "bbox[0] = [5.0, 2.0, 3.0, 4.0] is empty or inverted"),
    ([[1, 2, 3, 2]], "is empty or inverted"),
    ([[1, 2, 3, "4"]], "holds a string '4', expected a number"),
    ([[1, 2, 3, True]], "holds a boolean"),
    ([[0, 0, 1, 1], [1, 2, 3, 1e400]], "bbox[1] holds null, expected a number"),
    ("1,2,3,4", "field 'bbox' must be a list"),
])
def test_aic_bad_boxes(tmp_path, bbox, expected):
    message = aic_error(tmp_path, entries=[entry("a.jpg", bbox=bbox)])
    assert ANN in message and "entry 0 (image_id 'a.jpg')" in message and expected in message


def test_aic_nan_box_is_refused(tmp_path):
    message = aic_error(tmp_path, raw='[{"image_id": "a.jpg", "caption": ["x"], "bbox": [[NaN, 1, 2, 3]]}]')
    assert ANN in message and "bbox[0]" in message


def test_aic_field_whose_type_changes_between_entries(tmp_path):
    message = aic_error(tmp_path, entries=[entry("a.jpg", source="web"), entry("b.jpg", source=3)])
    assert "entry 1: field 'source' is a number but" in message and "entry 0 has a string" in message


def test_aic_check_images_names_the_first_missing_file(tmp_path):
    folder = make_aic(tmp_path, entries=[entry("a.jpg"), entry("b.jpg"), entry("c.jpg")])
    (folder / RELEASES["val"][2] / "a.jpg").write_bytes(b"jpeg")
    assert len(read_split("aic-icc", tmp_path, "val")) == 3  # not checked by default
    with pytest.raises(DataError) as info:
        read_split("aic-icc", tmp_path, "val", check_images=True)
    assert "entry 1" in str(info.value) and "b.jpg does not exist (2 of 3 image files are missing)" in str(info.value)
    for name in ("b.jpg", "c.jpg"):
        (folder / RELEASES["val"][2] / name).write_bytes(b"jpeg")
    assert len(read_split("aic-icc", tmp_path, "val", check_images=True)) == 3


@pytest.mark.parametrize("name", ["we[ir]d *dir?", "a::b", "p%20q#x"])
def test_odd_folder_names_are_read_and_nothing_is_written_into_them(tmp_path, name):
    root = tmp_path / name
    make_aic(root, entries=[entry("a.jpg", "一只猫")])
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    assert [r.captions for r in read_split("aic-icc", root, "val")] == [["一只猫"]]
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before


# ----------------------------------------------------------------- BriVL jsonl


def write_lines(path: Path, lines: list) -> None:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x, ensure_ascii=False)) + "\n"
                            for x in lines), encoding="utf-8")


def brivl_error(tmp_path: Path, lines: list) -> str:
    write_lines(tmp_path / "train.jsonl", lines)
    with pytest.raises(DataError) as info:
        read_split("brivl-jsonl", tmp_path, "train")
    return str(info.value)


def test_brivl_jsonl_reads_sentences_and_boxes_in_order(tmp_path):
    write_lines(tmp_path / "train.jsonl", [
        {"image_id": "imgs/1.jpg", "sentences": [["caption", " 一只猫\n"], ["title", "猫"]], "bbox": [[0, 0, 10, 10]]},
        "",
        {"image_id": "imgs/0.jpg", "sentences": [["caption", "一只狗"]]},
    ])
    one, zero = read_split("brivl-jsonl", tmp_path, "train")
    assert one.image_id == "imgs/1.jpg" and one.captions == ["一只猫", "猫"]
    assert one.meta["kinds"] == ["caption", "title"]
    assert one.boxes == [[0.0, 0.0, 10.0, 10.0]]
    assert one.image_path == (tmp_path / "imgs" / "1.jpg").resolve()
    assert zero.boxes is None and zero.captions == ["一只狗"]


@pytest.mark.parametrize("bad, expected", [
    ('{"image_id": "c.jpg", "sentences": [["c", "x"]]', "line 4 is not valid JSON"),
    ('["c.jpg"]', "line 4 holds a list; expected a JSON object"),
    ({"sentences": [["c", "x"]]}, "line 4: field 'image_id' is missing or null"),
    ({"image_id": "c.jpg"}, "line 4 (image_id 'c.jpg'): field 'sentences' is missing or null"),
    ({"image_id": "c.jpg", "sentences": []}, "line 4 (image_id 'c.jpg'): field 'sentences' is an empty list"),
    ({"image_id": "c.jpg", "sentences": [["c", "x", "y"]]}, "sentences[0] must be a [kind, text] pair, got 3 items"),
    ({"image_id": "c.jpg", "sentences": [["c", 5]]}, "sentences[0][1] must be a string, got a number"),
    ({"image_id": "c.jpg", "sentences": [[1, "x"]]}, "sentences[0][0] (the kind) must be a string"),
    ({"image_id": "c.jpg", "sentences": [["c", " "]]}, "all 1 sentences are empty"),
    ({"image_id": "../c.jpg", "sentences": [["c", "x"]]}, "line 4 (image_id '../c.jpg'): the image path '../c.jpg' leaves"),
    ({"image_id": "c.jpg", "sentences": [["c", "x"]], "bbox": [[0, 0, 0, 1]]}, "line 4 (image_id 'c.jpg'): bbox[0]"),
    ({"image_id": "a.jpg", "sentences": [["c", "x"]]}, "line 4: image_id 'a.jpg' repeats line 1; each image must appear once"),
])
def test_brivl_jsonl_errors_name_file_and_line(tmp_path, bad, expected):
    lines = [{"image_id": "a.jpg", "sentences": [["c", "x"]]}, "  ",
             {"image_id": "b.jpg", "sentences": [["c", "y"]]}, bad]
    message = brivl_error(tmp_path, lines)
    assert "train.jsonl" in message and expected in message


def test_brivl_jsonl_bad_utf8_line(tmp_path):
    (tmp_path / "train.jsonl").write_bytes(b'{"image_id": "a.jpg", "sentences": [["c", "x"]]}\n'
                                           b'{"image_id": "b.jpg", "sentences": [["c", "\xc3"]]}\n')
    with pytest.raises(DataError, match=r"train.jsonl line 2 is not valid UTF-8"):
        read_split("brivl-jsonl", tmp_path, "train")


def test_brivl_jsonl_missing_file_lists_the_splits_there(tmp_path):
    write_lines(tmp_path / "val.jsonl", [{"image_id": "a.jpg", "sentences": [["c", "x"]]}])
    with pytest.raises(DataError, match=r"train.jsonl does not exist.*splits there: val"):
        read_split("brivl-jsonl", tmp_path, "train")
    with pytest.raises(UsageError, match="must be a plain name"):
        read_split("brivl-jsonl", tmp_path, "../val")


# ----------------------------------------------------------------- generic jsonl / csv


def test_jsonl_defaults_groups_rows_and_keeps_first_seen_order(tmp_path):
    write_lines(tmp_path / "train.jsonl", [
        {"image": "b.jpg", "text": ["两只狗", "狗"]},
        {"image": "a.jpg", "text": ["一只猫"], "bbox": [[0, 0, 2, 2]]},
        {"image": "./b.jpg", "text": ["第三句"]},
    ])
    b, a = read_split("jsonl", tmp_path, "train")
    assert (b.image_id, b.captions, b.boxes) == ("b.jpg", ["两只狗", "狗", "第三句"], None)
    assert (a.image_id, a.captions, a.boxes) == ("a.jpg", ["一只猫"], [[0.0, 0.0, 2.0, 2.0]])


def test_jsonl_caption_column_and_custom_columns(tmp_path):
    write_lines(tmp_path / "train.jsonl", [{"image": "a.jpg", "caption": "一只猫"}])
    assert read_split("jsonl", tmp_path, "train")[0].captions == ["一只猫"]
    write_lines(tmp_path / "val.jsonl", [{"file": "a.jpg", "desc": " 一只 猫 "}])
    (record,) = read_split("jsonl", tmp_path, "val", image_column="file", text_column="desc")
    assert record.captions == ["一只猫"] and record.image_id == "a.jpg"


@pytest.mark.parametrize("bad, expected", [
    ({"text": "x"}, "line 2: the image column 'image' is missing or null"),
    ({"image": "c.jpg", "text": 3}, "must hold a string or a list of strings, got a number"),
    ({"image": "c.jpg", "text": "  "}, "line 2 (image 'c.jpg'): the text column 'text' is empty"),
    ({"image": "/c.jpg", "text": "x"}, "line 2 (image '/c.jpg'): the image path '/c.jpg' is absolute"),
    ({"image": "c.jpg", "text": ["x"]}, "line 2: field 'text' is a list of strings but"),
])
def test_jsonl_errors_name_file_and_line(tmp_path, bad, expected):
    write_lines(tmp_path / "train.jsonl", [{"image": "a.jpg", "text": "x"}, bad])
    with pytest.raises(DataError) as info:
        read_split("jsonl", tmp_path, "train")
    assert "train.jsonl" in str(info.value) and expected in str(info.value)


def test_jsonl_rows_of_one_image_with_different_boxes(tmp_path):
    write_lines(tmp_path / "train.jsonl", [
        {"image": "a.jpg", "text": "x", "bbox": [[0, 0, 1, 1]]},
        {"image": "b.jpg", "text": "y"},
        {"image": "a.jpg", "text": "z", "bbox": [[0, 0, 2, 2]]},
    ])
    with pytest.raises(DataError, match=r"train.jsonl line 3 \(image 'a.jpg'\): its 'bbox' differs from the boxes "
                                        r"given for the same image on line 1"):
        read_split("jsonl", tmp_path, "train")


def test_jsonl_without_text_field(tmp_path):
    write_lines(tmp_path / "train.jsonl", [{"image": "a.jpg", "desc": "x"}])
    with pytest.raises(DataError, match="no line has a text field"):
        read_split("jsonl", tmp_path, "train")


def test_csv_groups_rows_and_keeps_cells_as_written(tmp_path):
    (tmp_path / "train.csv").write_text(
        "image,text,extra\n"
        "001.jpg,一只猫,1\n"
        "b.jpg,NA,2\n"
        '001.jpg,"第二句, 带逗号",3\n'
        "b.jpg,null,x\n", encoding="utf-8")
    one, b = read_split("csv", tmp_path, "train")
    assert one.image_id == "001.jpg" and one.captions == ["一只猫", "第二句,带逗号"]
    assert b.captions == ["NA", "null"] and b.boxes is None


def test_csv_caption_column_and_custom_columns(tmp_path):
    (tmp_path / "train.csv").write_text("image,caption\na.jpg,一只猫\n", encoding="utf-8")
    assert read_split("csv", tmp_path, "train")[0].captions == ["一只猫"]
    (tmp_path / "val.csv").write_text("path,zh\na.jpg,一只猫\n", encoding="utf-8")
    assert read_split("csv", tmp_path, "val", image_column="path", text_column="zh")[0].captions == ["一只猫"]


@pytest.mark.parametrize("body, expected", [
    ("image,desc\na.jpg,x\n", "the header has no text column 'text' or 'caption' (columns: 'image', 'desc')"),
    ("file,text\na.jpg,x\n", "the header has no image column 'image'"),
    ("image,text\n", "has a header but no rows"),
    ("", "is empty; expected a header row"),
    ("image,text\na.jpg,x\nb.jpg,y,z\n", "train.csv line 3: the record has 3 fields but the header has 2"),
    ('image,text\na.jpg,"多行\n说明"\nb.jpg,  \n', "train.csv line 4 (image 'b.jpg'): the text column 'text' is empty"),
    ("image,text\na.jpg,x\n,y\n", "train.csv line 3: the image column 'image' is empty"),
    ("image,text\n../a.jpg,x\n", "line 2 (image '../a.jpg'): the image path '../a.jpg' leaves"),
])
def test_csv_errors_name_file_and_line(tmp_path, body, expected):
    (tmp_path / "train.csv").write_text(body, encoding="utf-8")
    with pytest.raises(DataError) as info:
        read_split("csv", tmp_path, "train")
    assert "train.csv" in str(info.value) and expected in str(info.value)


def test_csv_non_utf8(tmp_path):
    (tmp_path / "train.csv").write_bytes("image,text\na.jpg,一只狗\n".encode("gbk"))
    with pytest.raises(DataError, match="train.csv line 2 is not valid UTF-8"):
        read_split("csv", tmp_path, "train")


def test_csv_check_images_names_the_first_row_of_a_missing_image(tmp_path):
    (tmp_path / "train.csv").write_text("image,text\na.jpg,x\nb.jpg,y\nb.jpg,z\n", encoding="utf-8")
    (tmp_path / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(DataError, match=r"train.csv line 3: the image file .*b.jpg does not exist \(1 of 2"):
        read_split("csv", tmp_path, "train", check_images=True)


def test_generic_readers_reject_same_image_and_text_column(tmp_path):
    (tmp_path / "train.csv").write_text("image,text\na.jpg,x\n", encoding="utf-8")
    with pytest.raises(UsageError, match="must differ"):
        read_split("csv", tmp_path, "train", image_column="text", text_column="text")


# ----------------------------------------------------------------- registry


def test_registry_lists_builtins_and_rejects_unknown_names(tmp_path):
    assert {"aic-icc", "brivl-jsonl", "jsonl", "csv"} <= set(available_datasets())
    with pytest.raises(UsageError, match="unknown dataset 'coco'; choose one of: aic-icc, brivl-jsonl, "):
        read_split("coco", tmp_path, "train")
    with pytest.raises(DataError, match=f"the data folder {tmp_path / 'missing'} does not exist"):
        read_split("jsonl", tmp_path / "missing", "train")
    with pytest.raises(UsageError, match="the dataset 'csv' has no option 'colour'"):
        read_split("csv", tmp_path, "train", colour="red")


def test_registry_accepts_a_new_reader(tmp_path):
    def fake(data_dir, split, n=1):
        return [ImageTextRecord(f"{split}{i}", Path(data_dir) / f"{i}.jpg", ["x"]) for i in range(n)]

    register_reader("fake-test", fake)
    try:
        with pytest.raises(ValueError):
            register_reader("fake-test", fake)
        assert "fake-test" in available_datasets()
        assert [r.image_id for r in read_split("fake-test", str(tmp_path), "val", n=2)] == ["val0", "val1"]
    finally:
        unregister_reader("fake-test")
    assert "fake-test" not in available_datasets()


# ----------------------------------------------------------------- resolve_inside


def test_resolve_inside_accepts_paths_that_stay_inside(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "real.jpg").write_bytes(b"x")
    (tmp_path / "sub" / "inner.jpg").symlink_to(tmp_path / "real.jpg")
    root = tmp_path.resolve()
    assert resolve_inside(tmp_path, "a.jpg", "f") == root / "a.jpg"
    assert resolve_inside(tmp_path, "sub/../b.jpg", "f") == root / "b.jpg"
    assert resolve_inside(tmp_path, "sub/inner.jpg", "f") == root / "sub" / "inner.jpg"
    assert resolve_inside(tmp_path, "missing/dir/c.jpg", "f") == root / "missing" / "dir" / "c.jpg"


@pytest.mark.parametrize("value, expected", [
    (None, "must be a string, got NoneType"),
    (3, "must be a string, got int 3"),
    ("", "is empty"),
    ("  ", "is empty"),
    ("a\x00b", "contains a NUL byte"),
    ("/abs.jpg", "is absolute"),
    ("\\\\server\\x.jpg", "is absolute"),
    ("..", "leaves"),
    ("..\\x.jpg", "leaves"),
    ("a/../../x.jpg", "leaves"),
    ("x" * 5000, "cannot be checked"),
])
def test_resolve_inside_refusals_name_source_and_value(tmp_path, value, expected):
    with pytest.raises(DataError) as info:
        resolve_inside(tmp_path, value, "ann.json entry 4")
    assert str(info.value).startswith("ann.json entry 4: ") and expected in str(info.value)
    assert len(str(info.value)) < 400


def test_resolve_inside_refuses_symlinked_folders_leading_out(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "elsewhere").mkdir()
    (root / "out").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(DataError, match="is a symlink that resolves outside"):
        resolve_inside(root, "out/x.jpg", "ann.json line 2")


def test_jsonl_csv_and_brivl_records_are_held_as_columns(tmp_path):
    """The file layouts come back as a RecordTable (no Python object per record), whose
    records hold what the readers gave: ids as written, resolved paths, captions in
    first-seen order, boxes, BriVL's sentence kinds."""
    from wenlan_cli.data.table import RecordTable

    write_lines(tmp_path / "train.jsonl", [
        {"image": "./a.jpg", "text": ["一只猫", "猫"], "bbox": [[0, 0, 4, 4]]},
        {"image": "b.jpg", "text": ["狗"]},
        {"image": "a.jpg", "text": ["第三句"]},
    ])
    jsonl = read_split("jsonl", tmp_path, "train")
    (tmp_path / "train.csv").write_text("image,text\nb.jpg,狗\nsub/c.jpg,鸟\n", encoding="utf-8")
    csv_records = read_split("csv", tmp_path, "train")
    (tmp_path / "brivl").mkdir()
    write_lines(tmp_path / "brivl" / "train.jsonl", [{"image_id": "x.jpg", "sentences": [["caption", "一"], ["title", "二"]]}])
    brivl = read_split("brivl-jsonl", tmp_path / "brivl", "train")
    assert all(isinstance(r, RecordTable) for r in (jsonl, csv_records, brivl))
    root = tmp_path.resolve()
    assert [(r.image_id, r.image_path, r.captions, r.boxes) for r in jsonl] == [
        ("./a.jpg", root / "a.jpg", ["一只猫", "猫", "第三句"], [[0.0, 0.0, 4.0, 4.0]]), ("b.jpg", root / "b.jpg", ["狗"], None)]
    assert [(r.image_id, r.image_path, r.captions, r.meta) for r in csv_records] == [
        ("b.jpg", root / "b.jpg", ["狗"], {}), ("sub/c.jpg", root / "sub" / "c.jpg", ["鸟"], {})]
    assert [(r.image_id, r.captions, r.meta) for r in brivl] == [("x.jpg", ["一", "二"], {"kinds": ["caption", "title"]})]
