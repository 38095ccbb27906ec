"""`wenlan encode` below its command line (wenlan_cli/encode_inputs.py): the rows and the
skipped entries a backend's results become, and where the manifest goes. A stand-in
backend keeps these without a model."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from wenlan_cli.data.records import ImageTextRecord
from wenlan_cli.encode_inputs import EncodeInputs, encode_inputs, manifest_file


class StandIn:
    """A backend (backends.py's interface) whose vectors are row numbers; image 1 fails."""

    def __init__(self) -> None:
        self.calls = []

    def encode_texts(self, texts, *, batch_size, on_batch=None):
        self.calls.append(("texts", list(texts), batch_size))
        if on_batch is not None:
            on_batch(len(texts))
        return np.arange(len(texts) * 2, dtype=np.float64).reshape(-1, 2)

    def encode_images(self, records, *, batch_size, workers=0, skip_bad=False, on_batch=None):
        self.calls.append(("images", [r.image_id for r in records], batch_size, workers, skip_bad))
        if on_batch is not None:
            on_batch(len(records))
        kept = [i for i in range(len(records)) if i != 1]
        return np.ones((len(kept), 2), dtype=np.float64), kept, [(1, f"{records[1].image_path}: cannot decode")]


def test_texts_are_their_own_rows_as_contiguous_float32():
    seen = []
    array, rows, skipped = encode_inputs(StandIn(), EncodeInputs(["一只猫", "一条狗"], True), batch_size=8, workers=3,
                                         skip_bad=False, on_batch=seen.append)
    assert array.dtype == np.float32 and array.flags.c_contiguous and array.tolist() == [[0, 1], [2, 3]]
    assert (rows, skipped, seen) == (["一只猫", "一条狗"], [], [2])


def test_image_paths_keep_the_decoded_ones_and_list_failures_then_non_files():
    inputs = EncodeInputs([Path("a.jpg"), Path("b.jpg"), Path("c.jpg")], False,
                          not_files=[{"path": "fifo.jpg", "reason": "a FIFO (named pipe), not a regular file"}])
    backend = StandIn()
    array, rows, skipped = encode_inputs(backend, inputs, batch_size=4, workers=2, skip_bad=True)
    assert backend.calls == [("images", ["a.jpg", "b.jpg", "c.jpg"], 4, 2, True)]
    assert array.shape == (2, 2) and rows == ["a.jpg", "c.jpg"]
    assert skipped == [{"path": "b.jpg", "error": "b.jpg: cannot decode"},
                       {"path": "fifo.jpg", "error": "fifo.jpg: skipped, a FIFO (named pipe), not a regular file"}]


def test_a_dataset_s_rows_are_its_image_ids():
    records = [ImageTextRecord(image_id=f"id{i}", image_path=Path(f"img/{i}.jpg"), captions=["猫"]) for i in range(3)]
    inputs = EncodeInputs([r.image_path for r in records], False, records)
    _, rows, skipped = encode_inputs(StandIn(), inputs, batch_size=4, workers=0, skip_bad=True)
    assert rows == ["id0", "id2"] and skipped == [{"path": "img/1.jpg", "error": "img/1.jpg: cannot decode"}]


def test_the_manifest_goes_where_asked_else_beside_the_output_else_nowhere():
    assert manifest_file(Path("out/v.npy"), Path("m.json")) == Path("m.json")
    assert manifest_file(Path("out/v.npy"), None) == Path("out/v.manifest.json")
    assert manifest_file(None, None) is None
