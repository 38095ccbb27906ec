"""The unseen-data benchmark's datasets (benchmarks/unseen_data.py) are what they claim:
AIC-ICC layout read by the aic-icc reader, no word of the built-in data's vocabulary, and
validation images that each have attributes of their own."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

import unseen_data  # noqa: E402

from wenlan_cli.data import synthetic  # noqa: E402
from wenlan_cli.data.sources import load_records  # noqa: E402

BUILT_IN_WORDS = [*synthetic.COLOURS, *(w for words in synthetic.SHAPES.values() for w in words), *synthetic.POSITION_REGIONS]


@pytest.mark.parametrize("name", sorted(unseen_data.DATASETS))
def test_dataset_is_read_as_aic_icc_and_shares_no_word_with_the_built_in_data(tmp_path, name):
    root = unseen_data.write_dataset(name, tmp_path / name, train=6, val=5, seed=1)
    train = load_records("aic-icc", str(root), "train")
    val = load_records("aic-icc", str(root), "val")
    assert len(train) == 6 and len(val) == 5
    assert all(len(r.captions) == 5 and r.image_path.is_file() for r in [*train, *val])
    captions = unseen_data.vocabulary(name)
    assert not [w for w in BUILT_IN_WORDS if any(w in c for c in captions)]
    # each val image has its own attributes, so its five captions are its own
    assert len({tuple(sorted(r.captions)) for r in val}) == len(val)


def test_too_many_val_images_for_the_attribute_space_is_refused(tmp_path):
    with pytest.raises(ValueError, match="attribute combinations"):
        unseen_data.write_dataset("tiles", tmp_path, train=1, val=10_000)
