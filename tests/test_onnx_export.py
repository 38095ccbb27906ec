"""`wenlan export onnx`: the verified bundle, its refusals, and encode / index on onnxruntime."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from wenlan_cli.cli import main
from wenlan_cli.errors import ExportError

pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def bundle(tiny_run, tmp_path_factory):
    """The tiny checkpoint exported once (16 generated images and texts verified)."""
    from wenlan_cli.export.onnx import export_onnx

    out = tmp_path_factory.mktemp("onnx") / "bundle"
    report = export_onnx(tiny_run.out, out, samples=16)
    return out, report


@pytest.mark.slow
def test_export_writes_a_verified_self_contained_bundle(bundle):
    import onnx

    out, report = bundle
    assert sorted(report.files) == ["image.onnx", "preprocessing.json", "text.onnx", "tokenizer/tokenizer.json",
                                    "tokenizer/tokenizer_config.json", "tokenizer/vocab.txt"]
    info = json.loads((out / "preprocessing.json").read_text(encoding="utf-8"))
    assert info["image"]["size"] == 96 and info["image"]["max_regions"] == 10 and info["image"]["grid_size"] == 3
    assert info["image"]["mean"] == [0.485, 0.456, 0.406] and info["image"]["std"] == [0.229, 0.224, 0.225]
    assert info["image"]["region_pooling"] == "roi_align"
    assert info["text"]["max_length"] == 64 and info["text"]["pad_to_max_length"] is False
    assert info["checkpoint"]["model_sha256"] and info["embed_dim"] == 256
    check = info["verification"]
    assert check["image"]["rows"] == 16 and check["text"]["rows"] == 16
    assert check["image"]["worst_cosine"] >= 0.9999 and check["text"]["worst_cosine"] >= 0.9999
    assert check["image"]["repeatable"] and check["text"]["repeatable"]
    for name, inputs in (("image.onnx", ["images", "boxes", "box_mask"]), ("text.onnx", ["input_ids", "attention_mask"])):
        graph = onnx.load(str(out / name)).graph
        assert [i.name for i in graph.input] == inputs
        assert all(i.type.tensor_type.shape.dim[0].dim_param for i in graph.input)  # dynamic batch
    text_input = onnx.load(str(out / "text.onnx")).graph.input[0]
    assert text_input.type.tensor_type.shape.dim[1].dim_param  # dynamic length
    assert oct(out.stat().st_mode & 0o777) != oct(0o700)
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


def test_dataset_check_compares_recall(bundle, tiny_run, synth_dir):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.eval.evaluate import query_table
    from wenlan_cli.export.verify import RECALL_KEYS, verify_bundle
    from wenlan_cli.loading import load_checkpoint
    from wenlan_cli.runtime.bundle import load_bundle

    records = load_records("synth", synth_dir, "val")
    texts, gold = query_table(records)
    report = verify_bundle(load_checkpoint(tiny_run.out), load_bundle(bundle[0]), records=records, texts=texts, gold=gold,
                           source="synth/val")
    assert report.ok, report.problems
    assert report.image.rows == len(records) == 24 and report.text.rows == len(texts)
    assert {k: report.recall_onnx[k] for k in RECALL_KEYS} == {k: report.recall_torch[k] for k in RECALL_KEYS}
    assert report.to_json()["recall_onnx"]["t2i_r10"] == report.recall_torch["t2i_r10"]


def test_tokenizer_json_gives_the_checkpoints_token_ids(bundle, tiny_run):
    from wenlan_cli.data.pipeline import tokenize_all
    from wenlan_cli.models.tokenizer import load_tokenizer
    from wenlan_cli.runtime.bundle import load_bundle
    from wenlan_cli.runtime.encode import tokenize

    texts = ["一只红色的圆形", "", "ABC 12 两个蓝色的正方形!", "红" * 100, "未见过的字：龘"]
    reference = tokenize_all(load_tokenizer(tiny_run.checkpoint), texts, 64)
    assert tokenize(load_bundle(bundle[0]), texts) == reference
    assert len(reference[3]) == 64


def _copy_graphs(source: Path):
    def fake_export(model, config, directory, image_file, text_file):
        shutil.copy(source / image_file, directory / image_file)
        shutil.copy(source / text_file, directory / text_file)
    return fake_export


def test_a_bundle_that_disagrees_is_refused_naming_the_worst_row(bundle, tiny_run, tmp_path, monkeypatch, capsys):
    """An image graph whose row 3 is off: the export names that row and its cosine, exits 1
    and leaves neither OUT_DIR nor a temporary folder behind."""
    from wenlan_cli.export import graphs
    from wenlan_cli.runtime import encode as runtime_encode

    monkeypatch.setattr(graphs, "export_towers", _copy_graphs(bundle[0]))
    original = runtime_encode.encode_images

    def corrupted(*args, **kwargs):
        result = original(*args, **kwargs)
        row = result.embeddings[3]
        row += np.linspace(-0.05, 0.05, row.size, dtype=np.float32)
        row /= np.linalg.norm(row)
        return result

    monkeypatch.setattr(runtime_encode, "encode_images", corrupted)
    out = tmp_path / "deploy" / "bundle"
    code, _, err = run_cli(capsys, "export", "onnx", tiny_run.out, out, "--samples", 8)
    assert code == 1
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: the ONNX export does not reproduce")
    found = re.search(r"image row 3 \(generated_0003\.png\) has cosine (0\.\d{6}) to PyTorch's vector, below 0\.9999", line)
    assert found and 0.9 < float(found.group(1)) < 0.9999, line
    assert "Nothing was written" in line and "Traceback" not in err
    assert not out.exists() and list(out.parent.iterdir()) == []


def test_outputs_that_differ_between_runs_are_refused(bundle, tiny_run, tmp_path, monkeypatch):
    from wenlan_cli.export import graphs
    from wenlan_cli.export.onnx import export_onnx
    from wenlan_cli.runtime import encode as runtime_encode

    monkeypatch.setattr(graphs, "export_towers", _copy_graphs(bundle[0]))
    original = runtime_encode.encode_texts
    calls = []

    def drifting(*args, **kwargs):
        calls.append(1)
        vectors = original(*args, **kwargs)
        vectors[0, 0] = np.nextafter(vectors[0, 0], np.float32(2)) if len(calls) % 2 == 0 else vectors[0, 0]
        return vectors

    monkeypatch.setattr(runtime_encode, "encode_texts", drifting)
    with pytest.raises(ExportError, match="two onnxruntime runs of the text tower gave different vectors"):
        export_onnx(tiny_run.out, tmp_path / "b", samples=4)
    assert not (tmp_path / "b").exists() and list(tmp_path.iterdir()) == []


def test_export_usage_errors(bundle, tiny_run, tmp_path, capsys):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x.txt").write_text("x")
    code, _, err = run_cli(capsys, "export", "onnx", tiny_run.out, tmp_path / "full")
    assert code == 2 and "already exists and is not an empty folder" in err
    code, _, err = run_cli(capsys, "export", "onnx", tiny_run.out, tmp_path / "b", "--samples", 0)
    assert code == 2 and "--samples must be at least 1" in err
    code, _, err = run_cli(capsys, "encode", "--texts", tmp_path / "full" / "x.txt", "--checkpoint", tiny_run.out,
                           "--backend", "onnx", "-o", tmp_path / "t.npy")
    assert code == 2 and "is not an ONNX bundle" in err
    code, _, err = run_cli(capsys, "encode", "--texts", tmp_path / "full" / "x.txt", "--checkpoint", bundle[0],
                           "--backend", "onnx", "--device", "cuda", "-o", tmp_path / "t.npy")
    assert code == 2 and "--backend onnx runs on the CPU" in err
    code, _, err = run_cli(capsys, "encode", "--texts", tmp_path / "full" / "x.txt", "--checkpoint", bundle[0],
                           "--backend", "tensorflow", "-o", tmp_path / "t.npy")
    assert code == 2 and "--backend must be torch or onnx" in err


def test_encode_on_onnxruntime_equals_torch(bundle, tiny_run, synth_dir, tmp_path, capsys):
    vectors = {}
    for backend, checkpoint in (("torch", tiny_run.out), ("onnx", bundle[0])):
        for kind, extra in (("images", []), ("texts", ["--captions"])):
            target = tmp_path / f"{backend}_{kind}.npy"
            code, _, err = run_cli(capsys, "encode", "--dataset", "synth", "--data-dir", synth_dir, "--split", "val", *extra,
                                   "--checkpoint", checkpoint, "--backend", backend, "--batch-size", 7, "--workers", 0, "-o", target)
            assert code == 0, err
            manifest = json.loads(target.with_suffix(".manifest.json").read_text(encoding="utf-8"))
            vectors[backend, kind] = np.load(target), manifest["rows"]
    for kind in ("images", "texts"):
        (a, rows_a), (b, rows_b) = vectors["torch", kind], vectors["onnx", kind]
        assert rows_a == rows_b and a.shape == b.shape and a.shape[1] == 256
        assert (a * b).sum(axis=1).min() >= 0.9999
        assert np.abs(a - b).max() < 1e-4


def test_onnx_encode_and_index_never_import_torch(bundle, synth_dir, tmp_path):
    """The deployment path: encode (images, texts) and index on onnxruntime alone."""
    from wenlan_cli.data.sources import load_records

    images = tmp_path / "images"
    images.mkdir()
    for record in load_records("synth", synth_dir, "val")[:5]:
        shutil.copy(record.image_path, images / record.image_path.name)
    (tmp_path / "texts.txt").write_text("一只红色的圆形\n两个蓝色的正方形\n", encoding="utf-8")
    script = f"""
import sys
from wenlan_cli.cli import main
codes = [
    main(["encode", {str(images)!r}, "--checkpoint", {str(bundle[0])!r}, "--backend", "onnx", "-o", {str(tmp_path / 'i.npy')!r}]),
    main(["encode", "--texts", {str(tmp_path / 'texts.txt')!r}, "--checkpoint", {str(bundle[0])!r}, "--backend", "onnx", "-o", {str(tmp_path / 't.npy')!r}]),
    main(["index", {str(images)!r}, "--out", {str(tmp_path / 'idx')!r}, "--checkpoint", {str(bundle[0])!r}, "--backend", "onnx"]),
]
print(codes, sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "transformers", "timm")))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])})
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[0, 0, 0] []"
    assert np.load(tmp_path / "i.npy").shape == (5, 256) and np.load(tmp_path / "t.npy").shape == (2, 256)


def test_an_index_moves_between_backends_without_re_encoding(bundle, tiny_run, synth_dir, tmp_path):
    from wenlan_cli.data.sources import load_records
    from wenlan_cli.search.index import update_index

    images = tmp_path / "images"
    images.mkdir()
    for record in load_records("synth", synth_dir, "val")[:6]:
        shutil.copy(record.image_path, images / record.image_path.name)
    first = update_index(images, tmp_path / "idx", bundle[0], backend="onnx")
    assert len(first.encoded) == 6 and first.index.checkpoint["onnx"] == str(bundle[0].resolve())
    second = update_index(images, tmp_path / "idx", tiny_run.out)  # torch, same weights
    assert second.encoded == [] and second.unchanged == 6
    reference = update_index(images, tmp_path / "idx_torch", tiny_run.out, rebuild=True)
    assert (first.index.vectors * reference.index.vectors).sum(axis=1).min() >= 0.9999


@pytest.mark.slow
def test_converted_brivl_grid_pooling_and_padded_text_export(tmp_path):
    """The converted BriVL path: affine-grid region sampling and a BERT that sees the padding
    (text graph fixed at max_length)."""
    import torch

    from wenlan_cli.convert.brivl import released_model_config
    from wenlan_cli.export.onnx import export_onnx
    from wenlan_cli.models.registry import create_model, get_model_config
    from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab
    from wenlan_cli.engine.checkpoint import CheckpointContents, write_checkpoint

    tokenizer = tokenizer_from_vocab(build_char_vocab(["一只白色的小狗在草地上奔跑", "两个红色的圆形在左上角"]))
    base = get_model_config("brivl-tiny")
    config = released_model_config(base)
    config = dataclasses.replace(config, text=dataclasses.replace(config.text, max_length=24))
    torch.manual_seed(0)
    model = create_model(config, vocab_size=len(tokenizer), for_training=False).eval()
    info = {"step": 0, "vocab_size": len(tokenizer), "text_model_config": model.text_encoder.language_model.config.to_dict()}
    checkpoint = write_checkpoint(tmp_path / "converted", CheckpointContents(config, model.query_state_dict(), tokenizer, info))
    report = export_onnx(checkpoint, tmp_path / "bundle", samples=8)
    info = json.loads((tmp_path / "bundle" / "preprocessing.json").read_text(encoding="utf-8"))
    assert info["image"]["region_pooling"] == "grid" and info["text"]["pad_to_max_length"] is True
    assert report.parity.image.worst_cosine >= 0.9999 and report.parity.text.worst_cosine >= 0.9999
