"""The cheap start of the file layouts: columns checked whole give the records the row checks give,
the vocabulary counted with numpy equals the character-by-character count, and captions
tokenised per pair equal the ones tokenised up front."""

from __future__ import annotations

import json
import pickle
import re
import unicodedata
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from wenlan_cli.data import aic_icc, arrow_checks
from wenlan_cli.data.fields import _RUN
from wenlan_cli.data.pipeline import CaptionTokens, tokenize_all
from wenlan_cli.data.readers import read_split
from wenlan_cli.data.table import RecordTable, caption_counts, joined_captions
from wenlan_cli.errors import DataError
from wenlan_cli.models.tokenizer import build_char_vocab, count_chars, count_chars_joined, tokenizer_from_vocab

ENTRIES = [
    {"url": "http://x/a.jpg", "image_id": "a.jpg", "caption": ["一只猫 在 草地上", "  ", "hello \n world", "\u200b狗\u3000"]},
    {"image_id": "b.jpg", "caption": ["两个人"], "bbox": [[0, 0, 4, 4], [1.5, 2, 3, 8]]},
    {"url": None, "image_id": "c.jpg", "caption": ["", "红色的车"], "bbox": []},
    {"url": "http://x/d.jpg", "image_id": "d.jpg", "caption": ["Σσ大写 ΑΣ"]},
]


def write_aic(root: Path, entries: list[dict], split: str = "val") -> Path:
    names = aic_icc.AIC_SPLITS[split]
    images = root / names.release / names.images
    images.mkdir(parents=True)
    for entry in entries:
        Image.new("RGB", (8, 8)).save(images / entry["image_id"])
    (root / names.release / names.annotations).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return root


def read_slowly(monkeypatch, root: Path, split: str = "val") -> list:
    """The records the row-by-row checks give (the columns path turned off)."""
    with monkeypatch.context() as patch:
        patch.setattr(aic_icc, "_columns_table", lambda *args: None)
        return list(read_split("aic-icc", root, split))


def test_columns_path_gives_the_records_of_the_row_checks(tmp_path, monkeypatch):
    root = write_aic(tmp_path, ENTRIES)
    used = []
    original = aic_icc._columns_table
    monkeypatch.setattr(aic_icc, "_columns_table", lambda *a: used.append(original(*a)) or used[-1])
    table = read_split("aic-icc", root, "val")
    monkeypatch.undo()
    assert isinstance(table, RecordTable) and used[0] is not None  # the columns path was taken
    assert list(table) == read_slowly(monkeypatch, root)
    a, b, c, d = table
    assert a.captions == ["一只猫在草地上", "hello world", "狗"] and a.meta == {"url": "http://x/a.jpg"}
    assert b.boxes == [[0.0, 0.0, 4.0, 4.0], [1.5, 2.0, 3.0, 8.0]] and b.meta == {}
    assert c.captions == ["红色的车"] and c.boxes == [] and c.meta == {}
    assert d.boxes is None and d.captions == ["Σσ大写ΑΣ"]  # no space beside a wide character
    assert caption_counts(table) == [3, 1, 1, 1]


def test_table_behaves_as_the_list_of_records(tmp_path):
    root = write_aic(tmp_path, ENTRIES)
    table = read_split("aic-icc", root, "val")
    records = list(table)
    assert len(table) == 4 and table[-1] == records[3] and table[1:3] == records[1:3]
    with pytest.raises(IndexError):
        table[4]
    assert str(table[0].image_path) == str(Path(table.root) / "a.jpg") and table[0].image_path.is_file()
    again = RecordTable.from_records(records, table.root)
    assert list(again) == records
    assert list(pickle.loads(pickle.dumps(table))) == records  # travels to spawned workers
    assert joined_captions(table) == "\n".join(c for r in records for c in r.captions)


@pytest.mark.parametrize("entries, expected", [
    ([{"image_id": "a.jpg", "caption": [" ", ""]}], "entry 0 (image_id 'a.jpg'): all 2 captions in 'caption' are empty"),
    ([{"image_id": "a.jpg", "caption": ["猫"]}, {"image_id": "a.jpg", "caption": ["狗"]}], "image_id 'a.jpg' repeats entry 0"),
    ([{"image_id": "a.jpg", "caption": ["猫"], "bbox": [[4, 0, 1, 1]]}], "bbox[0] = [4.0, 0.0, 1.0, 1.0] is empty or inverted"),
    ([{"image_id": "a.jpg", "caption": ["猫"], "bbox": [[0, 0, 1]]}], "bbox[0] must be [x1, y1, x2, y2], got 3 values"),
    ([{"image_id": "a.jpg", "caption": ["猫" * 100_001]}], "is 100,001 characters long"),
])
def test_columns_that_fail_are_named_by_the_row_checks(tmp_path, entries, expected):
    write_aic(tmp_path, entries)
    with pytest.raises(DataError, match=re.escape(expected)):
        read_split("aic-icc", tmp_path, "val")


def test_a_symlink_leaving_the_image_folder_is_refused_naming_the_entry(tmp_path):
    outside = tmp_path / "secret.jpg"
    Image.new("RGB", (4, 4)).save(outside)
    root = write_aic(tmp_path / "d", [{"image_id": "a.jpg", "caption": ["猫"]}])
    names = aic_icc.AIC_SPLITS["val"]
    (root / names.release / names.images / "b.jpg").symlink_to(outside)
    entries = [{"image_id": "a.jpg", "caption": ["猫"]}, {"image_id": "b.jpg", "caption": ["狗"]}]
    (root / names.release / names.annotations).write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    with pytest.raises(DataError, match=r"entry 1 \(image_id 'b.jpg'\): the image path 'b.jpg' is a symlink"):
        read_split("aic-icc", root, "val")


def test_the_vectorised_patterns_cover_every_code_point_the_cleaning_touches():
    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    touched = [ch for ch in chars if ch.isspace() or _RUN.fullmatch(ch)]
    column = pa.array(touched, type=pa.large_string())
    assert pc.all(pc.match_substring_regex(column, arrow_checks._MAY_CHANGE)).as_py()
    spaces = pa.array([ch for ch in chars if ch.isspace()], type=pa.large_string())
    assert not pc.any(pc.match_substring_regex(spaces, arrow_checks._NOT_BLANK)).as_py()


def reference_counts(captions) -> Counter:
    counts: Counter = Counter()
    for caption in captions:
        text = unicodedata.normalize("NFC", caption).lower()
        counts.update(ch for ch in text if not ch.isspace() and unicodedata.category(ch)[0] != "C")
    return counts


CHARS = st.sampled_from(list("ΣσςAaİiße\u0301\u0308\u1100\u1161 \t\u3000一二\x00\u200b\ufeff\U0001F600Å\u212b"))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(CHARS, max_size=8).filter(lambda t: "\n" not in t), max_size=6))
def test_vocabulary_counts_equal_the_character_by_character_count(captions):
    expected = reference_counts(captions)
    assert count_chars(captions) == expected
    assert count_chars_joined("\n".join(captions)) == expected


def test_vocabulary_counts_are_the_same_in_chunks(monkeypatch):
    import wenlan_cli.data.chars as tokenizer_module

    captions = ["两个红色的圆形", "Σ大写", "e\u0301", "hello"] * 50
    whole = count_chars_joined("\n".join(captions))
    monkeypatch.setattr(tokenizer_module, "_TEXT_CHUNK", 7)
    monkeypatch.setattr(tokenizer_module, "_COUNT_CHUNK", 3)
    assert count_chars_joined("\n".join(captions)) == whole == count_chars(captions) == reference_counts(captions)


def test_captions_tokenised_per_pair_equal_the_ones_tokenised_up_front(tmp_path):
    root = write_aic(tmp_path, ENTRIES)
    table = read_split("aic-icc", root, "val")
    tokenizer = tokenizer_from_vocab(build_char_vocab(c for r in table for c in r.captions))
    lazy = CaptionTokens(table, tokenizer, 6)
    eager = [tokenize_all(tokenizer, r.captions, 6) for r in table]
    assert len(lazy) == 4 and [lazy[i] for i in range(4)] == eager
    assert [pickle.loads(pickle.dumps(lazy))[i] for i in range(4)] == eager
    records = list(table)
    assert [CaptionTokens(records, tokenizer, 6)[i] for i in range(4)] == eager  # a plain list too


def test_sampler_draws_the_captions_of_the_per_pair_arithmetic():
    import random

    import torch

    from wenlan_cli.data.pipeline import PairSampler

    rng = random.Random(0)
    counts = [rng.randint(1, 9) for _ in range(500)]
    sampler = PairSampler(counts, 4, seed=3)
    for epoch in range(3):
        generator = torch.Generator().manual_seed(3 * 1_000_003 + epoch)
        order = torch.randperm(len(counts), generator=generator).tolist()
        draws = torch.rand(len(order), generator=generator).tolist()
        expected = [(i, min(int(u * counts[i]), counts[i] - 1)) for i, u in zip(order, draws)]
        assert sampler.epoch_pairs(epoch) == expected
