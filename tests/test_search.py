"""Image search: exact top-k, the updatable index, `wenlan index` / `wenlan search`, the example."""

from __future__ import annotations

import base64
import importlib.util
import io
import json
import os
import runpy
import shutil
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from wenlan_cli.cli import main
from wenlan_cli.errors import DataError, UsageError
from wenlan_cli.search import Searcher, build_index, load_index, search_faiss, search_vectors, update_index
from wenlan_cli.search import index as index_module

ROOT = Path(__file__).resolve().parents[1]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def stable_topk(queries: np.ndarray, vectors: np.ndarray, k: int):
    """The reference: a full stable descending sort of each score row."""
    scores = torch.from_numpy(queries) @ torch.from_numpy(vectors).T
    order = torch.sort(scores, dim=1, descending=True, stable=True)
    return order.values[:, :k], order.indices[:, :k]


def test_search_vectors_matches_a_stable_sort_with_ties_across_chunks():
    # Small integers: every dot product is exact in float32 whatever the summation order,
    # so the scores of any chunking agree bit for bit, and ties are everywhere.
    rng = np.random.default_rng(0)
    vectors = rng.integers(-2, 3, (300, 8)).astype(np.float32)
    queries = np.concatenate([rng.integers(-2, 3, (5, 8)), vectors[:3]]).astype(np.float32)
    for chunk in (1, 7, 64, 1000):
        for k in (1, 5, 17, 300, 500):
            scores, rows = search_vectors(queries, vectors, k, chunk_size=chunk)
            ref_scores, ref_rows = stable_topk(queries, vectors, min(k, 300))
            assert rows.shape == (len(queries), min(k, 300)) and rows.dtype == torch.long
            assert torch.equal(rows, ref_rows), (chunk, k)
            assert torch.equal(scores, ref_scores)


def test_search_vectors_accepts_one_query_and_checks_its_inputs():
    vectors = torch.eye(4)
    scores, rows = search_vectors(torch.tensor([0.0, 1.0, 0.0, 0.0]), vectors, 2)
    assert rows.tolist() == [[1, 0]] and scores.tolist() == [[1.0, 0.0]]  # tie at 0: lower row first
    with pytest.raises(ValueError, match="dimensions"):
        search_vectors(torch.ones(1, 3), vectors)
    with pytest.raises(ValueError, match="positive"):
        search_vectors(torch.ones(1, 4), vectors, k=0)


def test_faiss_path_uses_index_flat_ip(monkeypatch):
    class FakeFlatIP:  # the part of faiss' API that search_faiss uses
        def __init__(self, dim):
            self.dim, self.data = dim, np.zeros((0, dim), np.float32)

        def add(self, x):
            assert x.dtype == np.float32 and x.flags.c_contiguous and x.shape[1] == self.dim
            self.data = np.concatenate([self.data, x])

        def search(self, q, k):
            s, i = stable_topk(q, self.data, k)
            return s.numpy(), i.numpy()

    monkeypatch.setitem(sys.modules, "faiss", types.SimpleNamespace(IndexFlatIP=FakeFlatIP))
    rng = np.random.default_rng(1)
    vectors = rng.standard_normal((50, 6)).astype(np.float32)
    queries = rng.standard_normal((3, 6)).astype(np.float32)
    scores, rows = search_faiss(queries, vectors, 60)
    ref_scores, ref_rows = search_vectors(queries, vectors, 60)
    assert torch.equal(rows, ref_rows) and torch.allclose(scores, ref_scores)


def test_faiss_not_installed_is_a_clear_usage_error(capsys, monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "faiss", None)  # import faiss -> ImportError
    with pytest.raises(UsageError, match=r"pip install 'wenlan\[faiss\]' brings faiss-cpu"):
        search_faiss(np.ones((1, 2), np.float32), np.ones((3, 2), np.float32))
    code, _, err = run_cli(capsys, "search", "红色", "--index", tmp_path, "--faiss")
    assert code == 2 and "--faiss needs the faiss package" in err


needs_faiss = pytest.mark.skipif(
    importlib.util.find_spec("faiss") is None, reason="faiss is not installed (pip install 'wenlan[faiss]')"
)


@needs_faiss
def test_real_faiss_finds_what_the_exact_search_finds():
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((500, 32)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries = np.concatenate([rng.standard_normal((6, 32)).astype(np.float32), vectors[[7, 123]]])
    scores, rows = search_faiss(queries, vectors, 10)
    ref_scores, ref_rows = search_vectors(queries, vectors, 10)
    assert rows.dtype == torch.long and rows.shape == (8, 10)
    assert torch.equal(rows, ref_rows)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=0)
    assert rows[6, 0] == 7 and rows[7, 0] == 123  # a stored vector finds itself first
    assert scores[6, 0] == pytest.approx(1.0, abs=1e-5)


# --------------------------------------------------------------------------- the index


def split_images(synth_dir):
    return sorted((synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103").glob("*.jpg"))


def val_images(synth_dir):
    return sorted((synth_dir / "ai_challenger_caption_validation_20170910" / "caption_validation_images_20170910").glob("*.jpg"))


@pytest.fixture
def photos(synth_dir, tmp_path):
    """Six images: four at the top, two in a sub-folder."""
    folder = tmp_path / "photos"
    (folder / "sub").mkdir(parents=True)
    for i, src in enumerate(split_images(synth_dir)[:6]):
        shutil.copy(src, folder / ("sub" if i >= 4 else "") / f"p{i}.jpg")
    return folder


@pytest.fixture
def spy(monkeypatch):
    """Records the images each update sends to the model."""
    calls: list[list[str]] = []
    real = index_module.encode_images

    def recording(model, records, *args, **kwargs):
        calls.append([r.image_id for r in records])
        return real(model, records, *args, **kwargs)

    monkeypatch.setattr(index_module, "encode_images", recording)
    return calls


def test_build_index_writes_vectors_manifest_and_checkpoint_identity(tiny_run, photos, tmp_path):
    report = build_index(photos, tmp_path / "idx", tiny_run.out)
    index = load_index(tmp_path / "idx")
    assert [row.path for row in index.rows] == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "sub/p4.jpg", "sub/p5.jpg"]
    assert index.vectors.dtype == np.float32 and index.vectors.shape == (6, 256)
    np.testing.assert_allclose(np.linalg.norm(index.vectors, axis=1), 1.0, atol=1e-5)
    row = index.rows[4]
    stat = (photos / "sub" / "p4.jpg").stat()
    assert (row.size, row.mtime_ns, row.sha256) == (stat.st_size, stat.st_mtime_ns, None)
    info = json.loads((tmp_path / "idx" / "index.json").read_text())
    ident = info["checkpoint"]
    assert ident["path"] == str((tiny_run.out / "final").resolve()) and ident["embed_dim"] == 256
    import hashlib

    assert ident["model_sha256"] == hashlib.sha256((tiny_run.out / "final" / "model.safetensors").read_bytes()).hexdigest()
    assert info["images_dir"] == str(photos.resolve())
    assert np.load(tmp_path / "idx" / info["vectors"]).shape == (6, 256)  # plain .npy, named by index.json
    assert sorted(report.added) == [r.path for r in index.rows] and report.unchanged == 0

    # The vectors are the model's: same as encoding through the Python API.
    import wenlan_cli

    model, preprocess, _ = wenlan_cli.load(tiny_run.out)
    direct = model.encode_image(torch.stack([preprocess(photos / "p1.jpg")]))
    np.testing.assert_allclose(index.vectors[1], direct[0].numpy(), atol=1e-4)


def test_update_encodes_only_new_and_changed_files_and_drops_deleted(tiny_run, photos, synth_dir, tmp_path, spy):
    idx = tmp_path / "idx"
    update_index(photos, idx, tiny_run.out)
    assert sorted(spy[-1]) == ["p0.jpg", "p1.jpg", "p2.jpg", "p3.jpg", "sub/p4.jpg", "sub/p5.jpg"]

    again = update_index(photos, idx)  # the checkpoint comes from the index
    assert len(spy) == 1 and again.encoded == [] and not again.written and again.unchanged == 6

    extra = val_images(synth_dir)
    shutil.copy(extra[0], photos / "sub" / "new.jpg")  # added
    shutil.copy(extra[1], photos / "p2.jpg")  # changed content
    stat = (photos / "p2.jpg").stat()
    os.utime(photos / "p2.jpg", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    (photos / "p3.jpg").unlink()  # removed
    report = update_index(photos, idx)
    assert spy[-1] == ["p2.jpg", "sub/new.jpg"]
    assert (report.added, report.changed, report.removed, report.unchanged) == (["sub/new.jpg"], ["p2.jpg"], ["p3.jpg"], 4)

    updated = load_index(idx)
    fresh = build_index(photos, tmp_path / "fresh", tiny_run.out).index
    assert updated.rows == fresh.rows
    np.testing.assert_allclose(updated.vectors, fresh.vectors, atol=1e-5)
    assert len(list(idx.glob("vectors.*.npy"))) == 1  # the old generation is gone


def test_hash_mode_ignores_a_touched_file_but_not_a_changed_one(tiny_run, photos, synth_dir, tmp_path, spy):
    idx = tmp_path / "idx"
    update_index(photos, idx, tiny_run.out, hash_contents=True)
    assert load_index(idx).rows[0].sha256 is not None
    os.utime(photos / "p0.jpg", ns=(1, 1_000_000_000))  # new mtime, same bytes
    report = update_index(photos, idx)  # keeps the index's hash setting
    assert report.encoded == [] and len(spy) == 1
    assert load_index(idx).rows[0].mtime_ns == 1_000_000_000  # the new mtime is recorded
    shutil.copy(val_images(synth_dir)[0], photos / "p1.jpg")
    assert update_index(photos, idx).encoded == ["p1.jpg"]


def _other_checkpoint(tiny_run, tmp_path) -> Path:
    from safetensors.torch import load_file, save_file

    other = tmp_path / "other-ckpt"
    shutil.copytree(tiny_run.out / "final", other)
    state = load_file(other / "model.safetensors")
    name = next(n for n, t in state.items() if t.is_floating_point())
    state[name] = state[name] + 0.01
    save_file(state, other / "model.safetensors")
    return other


def test_a_different_checkpoint_is_refused_unless_rebuild(tiny_run, photos, tmp_path, capsys):
    idx = tmp_path / "idx"
    update_index(photos, idx, tiny_run.out)
    other = _other_checkpoint(tiny_run, tmp_path)
    with pytest.raises(UsageError, match="pass --rebuild"):
        update_index(photos, idx, other)
    code, _, err = run_cli(capsys, "index", photos, "--out", idx, "--checkpoint", other, "--workers", 0)
    assert code == 2 and "was built with the checkpoint" in err
    code, _, err = run_cli(capsys, "index", photos, "--out", idx, "--checkpoint", other, "--workers", 0, "--rebuild")
    assert code == 0, err
    assert load_index(idx).checkpoint["path"] == str(other.resolve())

    # Searching with the index's own checkpoint after its weights changed is refused too.
    shutil.copy(tiny_run.out / "final" / "model.safetensors", other / "model.safetensors")
    code, _, err = run_cli(capsys, "search", "红色", "--index", idx)
    assert code == 1 and "changed since the index" in err


def test_an_interrupted_update_leaves_the_previous_index_intact(tiny_run, photos, synth_dir, tmp_path, monkeypatch):
    idx = tmp_path / "idx"
    update_index(photos, idx, tiny_run.out)
    before = load_index(idx)
    shutil.copy(val_images(synth_dir)[0], photos / "later.jpg")

    def crash(directory, info):
        raise KeyboardInterrupt  # after the new files are written, before index.json is replaced

    monkeypatch.setattr(index_module, "_commit", crash)
    with pytest.raises(KeyboardInterrupt):
        update_index(photos, idx)
    monkeypatch.undo()
    assert len(list(idx.glob("vectors.*.npy"))) == 2  # the orphan of the interrupted run
    after = load_index(idx)
    assert after.rows == before.rows and np.array_equal(after.vectors, before.vectors)

    # An unreadable image fails the run without touching the index, or is skipped.
    (photos / "broken.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError, match="broken.jpg"):
        update_index(photos, idx)
    assert load_index(idx).rows == before.rows
    report = update_index(photos, idx, skip_bad=True)
    assert [s["path"] for s in report.skipped] == ["broken.jpg"] and "later.jpg" in report.added
    assert len(list(idx.glob("vectors.*.npy"))) == 1 and not list(idx.glob("*.tmp"))
    assert "broken.jpg" not in [row.path for row in load_index(idx).rows]


def test_index_refuses_a_foreign_output_folder_and_missing_images(tiny_run, photos, tmp_path, capsys):
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "todo.txt").write_text("x")
    code, _, err = run_cli(capsys, "index", photos, "--out", foreign, "--checkpoint", tiny_run.out)
    assert code == 2 and "not a wenlan index" in err and "todo.txt" in err
    code, _, err = run_cli(capsys, "index", tmp_path / "nowhere", "--out", tmp_path / "i", "--checkpoint", tiny_run.out)
    assert code == 1 and "nowhere" in err
    code, _, err = run_cli(capsys, "search", "红色", "--index", tmp_path / "nowhere")
    assert code == 1 and "does not exist" in err


# --------------------------------------------------------------------------- search


@pytest.fixture
def built(tiny_run, photos, tmp_path):
    update_index(photos, tmp_path / "idx", tiny_run.out)
    return tmp_path / "idx"


def test_search_cli_json_matches_the_library_and_direct_scores(tiny_run, built, photos, capsys):
    code, out, err = run_cli(capsys, "search", "左上角有两个红色圆形", "一个蓝色三角形", "--image", photos / "p1.jpg",
                             "--index", built, "-k", 4, "--json", "--device", "cpu")
    assert code == 0, err
    results = json.loads(out)
    assert [(r["query"], r["kind"]) for r in results] == [
        ("左上角有两个红色圆形", "text"), ("一个蓝色三角形", "text"), (str(photos / "p1.jpg"), "image")]

    import wenlan_cli

    index = load_index(built)
    model, preprocess, _ = wenlan_cli.load(tiny_run.out)
    queries = torch.cat([model.encode_text(["左上角有两个红色圆形", "一个蓝色三角形"]),
                         model.encode_image(torch.stack([preprocess(photos / "p1.jpg")]))])
    scores = queries @ torch.from_numpy(index.vectors).T
    for result, row in zip(results, scores):
        assert [h["rank"] for h in result["results"]] == [1, 2, 3, 4]
        got = [h["score"] for h in result["results"]]
        assert got == sorted(got, reverse=True)
        np.testing.assert_allclose(got, torch.sort(row, descending=True).values[:4].numpy(), atol=1e-4)
        for hit in result["results"]:
            assert index.rows[hit["row"]].path == hit["path"] and Path(hit["file"]) == photos / hit["path"]
    own = next(h for h in results[2]["results"] if h["path"] == "p1.jpg")  # the image finds itself
    assert own["score"] == pytest.approx(1.0, abs=1e-4)


@needs_faiss
def test_search_cli_with_faiss_returns_the_exact_search_hits(built, capsys):
    args = ("search", "红色的圆形", "一个蓝色三角形", "--index", built, "-k", 5, "--json", "--device", "cpu")
    code, exact, err = run_cli(capsys, *args)
    assert code == 0, err
    code, fast, err = run_cli(capsys, *args, "--faiss")
    assert code == 0, err
    exact, fast = json.loads(exact), json.loads(fast)
    assert [[h["path"] for h in r["results"]] for r in fast] == [[h["path"] for h in r["results"]] for r in exact]
    for ours, theirs in zip(fast, exact):
        assert len(ours["results"]) == 5
        np.testing.assert_allclose([h["score"] for h in ours["results"]], [h["score"] for h in theirs["results"]], atol=1e-5)


def test_search_cli_prints_a_table_and_writes_an_html_page(built, photos, tmp_path, capsys):
    page = tmp_path / "out" / "results.html"
    code, out, err = run_cli(capsys, "search", "红色的圆形", "--index", built, "-k", 3, "--html", page,
                             "--image", photos / "p0.jpg")
    assert code == 0, err
    assert "红色的圆形" in out and "rank" in out and "score" in out and out.count(".jpg") >= 6
    text = page.read_text(encoding="utf-8")
    assert "红色的圆形" in text and "<img src=\"http" not in text and "src=\"/" not in text
    uris = [part.split('"')[0] for part in text.split('src="data:image/jpeg;base64,')[1:]]
    assert len(uris) == 3 + 3 + 1  # thumbnails of both queries' hits and of the query image
    thumb = Image.open(io.BytesIO(base64.b64decode(uris[0])))
    assert thumb.format == "JPEG" and max(thumb.size) <= 160


def test_search_usage_errors(built, capsys):
    code, _, err = run_cli(capsys, "search", "--index", built)
    assert code == 2 and "--image" in err
    code, _, err = run_cli(capsys, "search", "红色", "--index", built, "-k", 0)
    assert code == 2 and "-k" in err
    code, _, err = run_cli(capsys, "search", "--image", built / "missing.jpg", "--index", built)
    assert code == 1 and "missing.jpg" in err


def test_searcher_checkpoint_override_and_a_moved_checkpoint(tiny_run, built, tmp_path):
    index = load_index(built)
    assert Searcher(index, checkpoint=tiny_run.out).warnings == []
    assert Searcher(index, checkpoint=_other_checkpoint(tiny_run, tmp_path)).warnings  # different weights: warned
    index.checkpoint["path"] = str(tmp_path / "gone")
    with pytest.raises(Exception, match="no longer exists; pass --checkpoint"):
        Searcher(index)


def test_search_example_indexes_and_searches(tiny_run, photos, tmp_path, capsys, monkeypatch):
    page = tmp_path / "example.html"
    argv = ["search_images.py", "--checkpoint", str(tiny_run.out), "--images", str(photos), "--index",
            str(tmp_path / "ex.index"), "--query", "左上角有两个红色圆形", "--image", str(photos / "p0.jpg"),
            "-k", "2", "--html", str(page)]
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(ROOT / "examples" / "search_images.py"), run_name="__main__")
    out = capsys.readouterr().out
    assert "6 images" in out and "左上角有两个红色圆形" in out and str(photos / "p0.jpg") in out
    assert sum(line.strip().startswith(("1.", "2.")) for line in out.splitlines()) == 4
    assert page.is_file()
