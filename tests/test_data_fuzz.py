"""Fuzzing the readers: any annotation file ends in a DataError/UsageError or a correct parse.

Random JSON shapes, wrong types, missing fields, huge strings, invalid UTF-8,
cut-off files and random bytes are written with the real file names; the
reader must either raise one of our errors (one line, no traceback) or return
records that satisfy the record contract. Well-formed generated files must
parse to exactly the records an independent oracle expects. A SIGALRM guard
turns a hang into a failure.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import os
import signal
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wenlan_cli.data.readers import read_split
from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.data.table import RecordTable
from wenlan_cli.errors import DataError, UsageError

FUZZ = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
ORACLE = settings(max_examples=15, deadline=None, derandomize=True, database=None,
                  suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

AIC_RELEASE = "ai_challenger_caption_validation_20170910"
AIC_ANNOTATIONS = "caption_validation_annotations_20170910.json"
AIC_IMAGES = "caption_validation_images_20170910"
PER_EXAMPLE_SECONDS = 20


@contextlib.contextmanager
def no_hang(seconds: int = PER_EXAMPLE_SECONDS):
    def fail(signum, frame):
        raise AssertionError(f"the reader ran for more than {seconds} s")

    previous = signal.signal(signal.SIGALRM, fail)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


# ----------------------------------------------------------------- strategies

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats()
           | st.text(max_size=12) | st.sampled_from(["", " ", "\n", "a.jpg", "../x.jpg", "一只猫"]))
JSON = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                    | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
HUGE = st.integers(20_000, 200_000).map(lambda n: "长" * n)
# Captions: mostly text with stray whitespace and invisible characters, some huge.
CAPTION = st.one_of(*[st.text(alphabet="一个人在路上猫狗 \n\t\r\u3000\u200bab", min_size=1, max_size=16)] * 6,
                    st.text(max_size=8), HUGE)
NAME = st.text(alphabet="abcdef0123456789", min_size=1, max_size=6).map(lambda s: s + ".jpg")
IMAGE_ID = st.one_of(*[NAME] * 6, st.sampled_from(
    ["sub/c.jpg", "sub/../d.jpg", "../x.jpg", "/etc/passwd", "", ".", "C:/x.jpg", "a\x00b", "x" * 4000]),
    st.text(alphabet="ab./\\ \x00一", max_size=8))
GOOD_BOX = st.tuples(st.integers(0, 99), st.integers(0, 99), st.integers(1, 99), st.floats(0.5, 99)).map(
    lambda t: [t[0], t[1], t[0] + t[2], t[1] + t[3]])
BOX = st.one_of(*[GOOD_BOX] * 6, st.lists(st.integers(-5, 50) | st.floats() | st.booleans() | st.text(max_size=2),
                                          max_size=5))
BOXES = st.lists(BOX, max_size=3)


@st.composite
def mutated(draw, entries: st.SearchStrategy[list], keys: list[str]):
    """A list of well-formed objects in which one field may be deleted or replaced."""
    items = draw(entries)
    if items and draw(st.booleans()):
        item = items[draw(st.integers(0, len(items) - 1))]
        key = draw(st.sampled_from(keys))
        if draw(st.booleans()):
            item.pop(key, None)
        else:
            item[key] = draw(st.one_of(JSON, CAPTION, IMAGE_ID, BOXES))
    return items


def with_boxes(entry: st.SearchStrategy[dict]) -> st.SearchStrategy[dict]:
    return st.tuples(entry, st.none() | BOXES).map(lambda t: t[0] if t[1] is None else {**t[0], "bbox": t[1]})


AIC_ENTRIES = mutated(st.lists(with_boxes(st.fixed_dictionaries(
    {"url": st.text(max_size=10), "image_id": IMAGE_ID, "caption": st.lists(CAPTION, min_size=1, max_size=5)})),
    max_size=5), ["url", "image_id", "caption", "bbox", "other"])
BRIVL_ENTRIES = mutated(st.lists(with_boxes(st.fixed_dictionaries(
    {"image_id": IMAGE_ID,
     "sentences": st.lists(st.tuples(st.sampled_from(["caption", "title"]), CAPTION).map(list), min_size=1,
                           max_size=3)})), max_size=5), ["image_id", "sentences", "bbox"])
GENERIC_ENTRIES = st.one_of(
    mutated(st.lists(with_boxes(st.fixed_dictionaries({"image": IMAGE_ID, "text": CAPTION})), max_size=5),
            ["image", "text", "bbox", "caption"]),
    mutated(st.lists(with_boxes(st.fixed_dictionaries({"image": IMAGE_ID, "text": st.lists(CAPTION, max_size=3)})),
                     max_size=5), ["image", "text", "bbox"]),
)


@st.composite
def corrupt(draw, data: bytes) -> bytes:
    """Mostly `data` itself; else cut it, or splice invalid UTF-8 or random bytes into it."""
    how = draw(st.sampled_from(["keep"] * 5 + ["cut", "bad-utf8", "splice"]))
    at = draw(st.integers(0, len(data)))
    if how == "cut":
        return data[:at]
    if how == "bad-utf8":
        return data[:at] + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x80\x80"])) + data[at:]
    if how == "splice":
        return data[:at] + draw(st.binary(max_size=8)) + data[at:]
    return data


def json_array_file(entries) -> st.SearchStrategy[bytes]:
    good = entries.map(lambda xs: json.dumps(xs, ensure_ascii=False).encode())
    return st.one_of(*[good] * 4, JSON.map(lambda x: json.dumps(x).encode()), st.binary(max_size=64)
                     ).flatmap(corrupt)


def json_lines_file(entries) -> st.SearchStrategy[bytes]:
    junk = st.one_of(JSON.map(json.dumps), st.sampled_from(["", "   ", "{", "[]", "null"]))

    @st.composite
    def lines(draw):
        rendered = [json.dumps(x, ensure_ascii=False) for x in draw(entries)]
        if draw(st.booleans()):  # a blank or junk line somewhere
            rendered.insert(draw(st.integers(0, len(rendered))), draw(junk))
        return "\n".join(rendered).encode()

    return st.one_of(*[lines()] * 4, st.binary(max_size=64)).flatmap(corrupt)


def csv_file() -> st.SearchStrategy[bytes]:
    cell = st.one_of(st.text(alphabet="ab一,\"\n ./", min_size=1, max_size=6),
                     st.sampled_from(["a.jpg", "b.jpg", "../x.jpg", "NA", "", "null"]))
    header = st.one_of(*[st.just(["image", "text"])] * 3, st.just(["caption", "x", "image"]),
                       st.lists(st.sampled_from(["image", "text", "caption", "x"]), max_size=4))

    def render(parts):
        head, rows = parts
        out = io.StringIO()
        writer = csv.writer(out)
        if head:
            writer.writerow(head)
        writer.writerows(row[: len(head)] if head and len(row) > len(head) else row for row in rows)
        return out.getvalue().encode()

    rows = st.lists(st.lists(cell, min_size=2, max_size=3), max_size=5)
    table = st.tuples(header, rows).map(render)
    return st.one_of(table, table, table, st.binary(max_size=64)).flatmap(corrupt)


# ----------------------------------------------------------------- contract


def assert_records_ok(records, root: Path) -> None:
    root_real = os.path.realpath(root)
    assert isinstance(records, (list, RecordTable)) and len(records)  # AIC-ICC's are held as columns
    for record in records:
        assert isinstance(record, ImageTextRecord)
        assert isinstance(record.image_id, str)
        path = str(record.image_path)
        assert os.path.isabs(path) and path != root_real
        assert os.path.commonpath([root_real, path]) == root_real
        assert record.captions
        for caption in record.captions:
            assert isinstance(caption, str) and caption and caption == caption.strip()
            assert "\n" not in caption and "\r" not in caption
        if record.boxes is not None:
            for box in record.boxes:
                assert len(box) == 4 and all(isinstance(v, float) and math.isfinite(v) for v in box)
                assert box[2] > box[0] and box[3] > box[1]


def read_or_fail_cleanly(dataset: str, data_dir: Path, split: str, root: Path, **options):
    try:
        with no_hang():
            records = read_split(dataset, data_dir, split, **options)
    except (DataError, UsageError) as error:
        message = str(error)
        assert message and "\n" not in message and "Traceback" not in message
        assert len(message) < 2000
        return None
    assert_records_ok(records, root)
    return records


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz")
    aic = root / "aic"
    (aic / AIC_RELEASE / AIC_IMAGES).mkdir(parents=True)
    lines = root / "lines"
    lines.mkdir()
    return {"aic": aic, "lines": lines}


# ----------------------------------------------------------------- fuzz


@FUZZ
@given(data=json_array_file(AIC_ENTRIES))
def test_fuzz_aic_icc(folders, data):
    aic = folders["aic"]
    (aic / AIC_RELEASE / AIC_ANNOTATIONS).write_bytes(data)
    records = read_or_fail_cleanly("aic-icc", aic, "val", aic / AIC_RELEASE / AIC_IMAGES)
    if records:
        assert len({r.image_id for r in records}) == len(records)


@FUZZ
@given(data=json_lines_file(BRIVL_ENTRIES))
def test_fuzz_brivl_jsonl(folders, data):
    root = folders["lines"]
    (root / "train.jsonl").write_bytes(data)
    read_or_fail_cleanly("brivl-jsonl", root, "train", root)


@FUZZ
@given(data=json_lines_file(GENERIC_ENTRIES))
def test_fuzz_generic_jsonl(folders, data):
    root = folders["lines"]
    (root / "fuzz.jsonl").write_bytes(data)
    read_or_fail_cleanly("jsonl", root, "fuzz", root)


@FUZZ
@given(data=csv_file())
def test_fuzz_csv(folders, data):
    root = folders["lines"]
    (root / "fuzz.csv").write_bytes(data)
    read_or_fail_cleanly("csv", root, "fuzz", root)


@FUZZ
@given(dataset=st.sampled_from(["aic-icc", "brivl-jsonl", "jsonl", "csv", "nope", ""]),
       split=st.sampled_from(["train", "val", "test", "", "../x", "a/b", ".", "x\x00"]),
       options=st.dictionaries(st.sampled_from(["check_images", "image_column", "text_column", "colour"]),
                               st.sampled_from([True, "", "image", "text", 3]), max_size=2))
def test_fuzz_dataset_split_and_options(folders, dataset, split, options):
    root = folders["lines"]
    read_or_fail_cleanly(dataset, root, split, root, **options)


# ----------------------------------------------------------------- oracle

CJK_CAPTION = st.tuples(st.text(alphabet=" \n\t\r\u3000", max_size=3),
                        st.text(alphabet="一个人在路上的猫狗草地", min_size=1, max_size=10),
                        st.text(alphabet="一个人在路上 \n\t\u3000", max_size=8)).map("".join)
ORACLE_BOXES = st.lists(st.tuples(st.integers(0, 500), st.integers(0, 500), st.integers(1, 300), st.integers(1, 300))
                 .map(lambda t: [t[0] / 2, t[1], t[0] / 2 + t[2], t[1] + t[3] / 4]), max_size=3)


def squeeze(caption: str) -> str:
    """The oracle for CJK-only captions: every whitespace character goes."""
    return "".join(caption.split())


@ORACLE
@given(items=st.lists(st.tuples(st.lists(CJK_CAPTION, min_size=1, max_size=5), st.none() | ORACLE_BOXES),
                      min_size=1, max_size=6))
def test_oracle_aic_icc(folders, items):
    aic = folders["aic"]
    entries = []
    for i, (captions, boxes) in enumerate(items):
        entry = {"url": f"http://x/{i}.jpg", "image_id": f"{i:04x}.jpg", "caption": captions}
        if boxes is not None:
            entry["bbox"] = boxes
        entries.append(entry)
    (aic / AIC_RELEASE / AIC_ANNOTATIONS).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    with no_hang():
        records = read_split("aic-icc", aic, "val")
    assert [r.image_id for r in records] == [e["image_id"] for e in entries]
    assert [r.captions for r in records] == [[squeeze(c) for c in e["caption"]] for e in entries]
    assert [r.boxes for r in records] == [e.get("bbox") for e in entries]
    assert [r.meta["url"] for r in records] == [e["url"] for e in entries]


@ORACLE
@given(items=st.lists(st.tuples(st.sampled_from(["a.jpg", "b.jpg", "sub/c.jpg"]), CJK_CAPTION),
                      min_size=1, max_size=8))
def test_oracle_csv_grouping(folders, items):
    root = folders["lines"]
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(["image", "text"])
    writer.writerows(items)
    (root / "oracle.csv").write_text(out.getvalue(), encoding="utf-8")
    with no_hang():
        records = read_split("csv", root, "oracle")
    expected: dict[str, list[str]] = {}
    for image, caption in items:
        expected.setdefault(image, []).append(squeeze(caption))
    assert [(r.image_id, r.captions) for r in records] == list(expected.items())


@ORACLE
@given(items=st.lists(st.tuples(st.lists(CJK_CAPTION, min_size=1, max_size=3), st.none() | ORACLE_BOXES),
                      min_size=1, max_size=6), blank=st.booleans())
def test_oracle_brivl_jsonl(folders, items, blank):
    root = folders["lines"]
    lines = []
    for i, (captions, boxes) in enumerate(items):
        entry = {"image_id": f"imgs/{i}.jpg", "sentences": [["caption", c] for c in captions]}
        if boxes is not None:
            entry["bbox"] = boxes
        lines.append(json.dumps(entry, ensure_ascii=False))
        if blank:
            lines.append("")
    (root / "oracle.jsonl").write_text("\n".join(lines), encoding="utf-8")
    with no_hang():
        records = read_split("brivl-jsonl", root, "oracle")
    assert [r.captions for r in records] == [[squeeze(c) for c in caps] for caps, _ in items]
    assert [r.boxes for r in records] == [boxes for _, boxes in items]
