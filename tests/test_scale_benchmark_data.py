"""The scale benchmark's datasets (benchmarks/scale_data.py): AIC-ICC layout read by the
aic-icc reader, five captions an image, every image a hard link to a few JPEG files."""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import scale_data  # noqa: E402

from wenlan_cli.data.readers import read_split  # noqa: E402
from wenlan_cli.data.table import RecordTable  # noqa: E402


def test_dataset_is_aic_icc_over_hard_links(tmp_path, monkeypatch):
    monkeypatch.setattr(scale_data, "LINKS_PER_FILE", 7)  # several source files, as past ext4's limit
    root = scale_data.make_dataset(tmp_path / "d", 20, val_images=3, seed=2)
    train = read_split("aic-icc", root, "train")
    val = read_split("aic-icc", root, "val")
    assert isinstance(train, RecordTable) and len(train) == 20 and len(val) == 3
    assert train.caption_counts().tolist() == [5] * 20
    assert all(10 <= len(c) <= 30 for r in train for c in r.captions)
    assert {r.image_id for r in train}.isdisjoint(r.image_id for r in val)
    inodes = {os.stat(r.image_path).st_ino for r in train}
    assert len(inodes) == 3  # 20 names over ceil(20 / 7) files
    assert all(r.meta["url"].endswith(r.image_id) for r in train)
    again = scale_data.make_dataset(tmp_path / "d", 20, val_images=3, seed=2)  # replaced, the same data
    assert [r.captions for r in read_split("aic-icc", again, "train")] == [r.captions for r in train]
