"""Zero-shot classification: labels file, prompt ensembling, top-k, CSV/JSON, --eval accuracy."""

from __future__ import annotations

import csv
import io
import json
import shutil

import pytest
import torch
import torch.nn.functional as F

import wenlan_cli
from wenlan_cli.classify import DEFAULT_TEMPLATES, check_templates, classify, evaluate, label_embeddings, read_labels
from wenlan_cli.cli import main
from wenlan_cli.errors import DataError, UsageError

COLOURS = ["红色", "蓝色", "绿色", "黄色", "紫色", "橙色", "黑色"]
TEMPLATES = ["一张{}的照片", "图片里有{}", "{}"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def model(tiny_run):
    return wenlan_cli.load(tiny_run.out)[0]


@pytest.fixture
def images(synth_dir):
    return sorted((synth_dir / "ai_challenger_caption_test_a_20180103" / "caption_test_a_images_20180103").glob("*.jpg"))


@pytest.fixture
def labels_file(tmp_path):
    path = tmp_path / "labels.txt"
    path.write_text("\ufeff红色\n\n 蓝色 \n绿色\n黄色\n紫色\n橙色\n黑色\n\n", encoding="utf-8")
    return path


@pytest.fixture
def by_label(images, tmp_path):
    """A one-folder-per-label tree: 3 + 3 + 2 images under 红色, 蓝色, 绿色."""
    root = tmp_path / "by-label"
    for i, src in enumerate(images):
        folder = root / COLOURS[i % 3]
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / src.name)
    return root


def test_read_labels_ignores_blanks_and_refuses_duplicates(labels_file, tmp_path):
    assert read_labels(labels_file) == COLOURS
    dup = tmp_path / "dup.txt"
    dup.write_text("红色\n蓝色\n\n红色\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"dup.txt repeats the label '红色' on line 4 \(first on line 1\)"):
        read_labels(dup)
    (tmp_path / "empty.txt").write_text("\n \n", encoding="utf-8")
    with pytest.raises(DataError, match="holds no labels"):
        read_labels(tmp_path / "empty.txt")
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "missing.txt")
    (tmp_path / "gbk.txt").write_bytes("红色\n".encode("gbk"))
    with pytest.raises(DataError, match="gbk.txt line 1 is not valid UTF-8"):
        read_labels(tmp_path / "gbk.txt")


def test_templates_need_one_placeholder():
    assert check_templates(None) == list(DEFAULT_TEMPLATES) and all("{}" in t for t in DEFAULT_TEMPLATES)
    with pytest.raises(UsageError, match="exactly once"):
        check_templates(["一张照片"])
    with pytest.raises(UsageError, match="exactly once"):
        check_templates(["{}和{}"])


def test_label_embeddings_are_the_renormalised_mean_of_normalised_prompts(model):
    vectors = label_embeddings(model, COLOURS[:4], TEMPLATES)
    assert vectors.shape == (4, 256) and vectors.dtype == torch.float32
    for i, label in enumerate(COLOURS[:4]):
        prompts = [F.normalize(model.encode_text([t.replace("{}", label)])[0], dim=0) for t in TEMPLATES]
        expected = F.normalize(torch.stack(prompts).mean(0), dim=0)
        torch.testing.assert_close(vectors[i], expected, atol=1e-5, rtol=0)
    # One template: the prompt vector itself.
    single = label_embeddings(model, ["红色"], ["一张{}的照片"])
    torch.testing.assert_close(single[0], F.normalize(model.encode_text(["一张红色的照片"])[0], dim=0), atol=1e-5, rtol=0)


def test_classify_scores_shapes_and_order(tiny_run, model, images):
    result = classify(model, images, COLOURS, TEMPLATES, k=3)
    n = len(images)
    assert result.paths == images and result.scores.shape == (n, len(COLOURS))
    assert result.top_indices.shape == (n, 3) and result.top_scores.shape == (n, 3)
    assert torch.allclose(result.probabilities.sum(1), torch.ones(n), atol=1e-5)
    for i in range(n):
        order = torch.sort(result.scores[i], descending=True, stable=True).indices[:3]
        assert result.top_indices[i].tolist() == order.tolist()
        torch.testing.assert_close(result.top_scores[i], result.scores[i, order])
    top = result.top()
    assert [label for label, _, _ in top[0]] == [COLOURS[j] for j in result.top_indices[0].tolist()]
    # Scores are cosine similarities of the image and label vectors.
    _, preprocess, _ = wenlan_cli.load(tiny_run.out)
    image_vector = model.encode_image(torch.stack([preprocess(images[1])]))[0]
    expected = label_embeddings(model, COLOURS, TEMPLATES) @ image_vector
    torch.testing.assert_close(result.scores[1], expected, atol=1e-4, rtol=0)
    assert classify(model, images[:1], COLOURS[:2], TEMPLATES, k=9).top_indices.shape == (1, 2)  # k capped


def test_unreadable_image_is_named_or_skipped(model, images, tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"nope")
    with pytest.raises(DataError, match="bad.jpg"):
        classify(model, [images[0], bad], COLOURS, TEMPLATES)
    result = classify(model, [images[0], bad], COLOURS, TEMPLATES, skip_bad=True)
    assert result.paths == [images[0]] and [p for p, _ in result.failures] == [bad]


def test_cli_csv_lists_top_k_labels_per_image(tiny_run, model, images, labels_file, tmp_path, capsys):
    out_csv = tmp_path / "out.csv"
    args = ["classify", *images[:4], "--checkpoint", tiny_run.out, "--labels", labels_file, "-k", 3, "--csv", out_csv,
            "--workers", 0, "--device", "cpu"]
    for t in TEMPLATES:
        args += ["--template", t]
    code, _, err = run_cli(capsys, *args)
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out_csv.read_text(encoding="utf-8"))))
    assert list(rows[0]) == ["path", "rank", "label", "score", "probability"]
    assert len(rows) == 4 * 3
    expected = classify(model, images[:4], COLOURS, TEMPLATES, k=3)
    for i, path in enumerate(images[:4]):
        mine = rows[3 * i : 3 * i + 3]
        assert [r["path"] for r in mine] == [str(path)] * 3 and [r["rank"] for r in mine] == ["1", "2", "3"]
        assert [r["label"] for r in mine] == [COLOURS[j] for j in expected.top_indices[i].tolist()]
        assert [float(r["score"]) for r in mine] == pytest.approx(expected.top_scores[i].tolist(), abs=1e-5)

    code, out, err = run_cli(capsys, "classify", images[0], "--checkpoint", tiny_run.out, "--labels", labels_file,
                             "--workers", 0)
    assert code == 0, err
    assert "#5" in out and "#6" not in out  # the default -k 5 table


def test_cli_eval_accuracy_matches_a_hand_count(tiny_run, model, by_label, labels_file, tmp_path, capsys):
    report_json, report_csv = tmp_path / "acc.json", tmp_path / "acc.csv"
    code, out, err = run_cli(capsys, "classify", by_label, "--eval", "--checkpoint", tiny_run.out, "--labels",
                             labels_file, "--json", report_json, "--csv", report_csv, "--workers", 0)
    assert code == 0, err
    report = json.loads(report_json.read_text(encoding="utf-8"))

    # By hand from the scores: the gold label is correct at K when fewer than K labels
    # beat it (equal scores: the earlier label in the file wins).
    paths = sorted(by_label.rglob("*.jpg"))
    gold = [p.parent.name for p in paths]
    scores = classify(model, paths, COLOURS, None, k=1).scores
    top1 = top5 = 0
    per_class: dict[str, list[int]] = {}
    for row, g in zip(scores, gold):
        j = COLOURS.index(g)
        rank = sum(1 for i, s in enumerate(row.tolist()) if s > row[j] or (s == row[j] and i < j))
        top1 += rank < 1
        top5 += rank < 5
        counts = per_class.setdefault(g, [0, 0, 0])
        counts[0] += 1
        counts[1] += rank < 1
        counts[2] += rank < 5
    assert report["images"] == len(paths) == 8
    assert report["top1"] == pytest.approx(100 * top1 / 8) and report["top5"] == pytest.approx(100 * top5 / 8)
    assert {c["label"]: [c["images"], c["top1_correct"], c["top5_correct"]] for c in report["per_class"]} == per_class
    assert [c["label"] for c in report["per_class"]] == ["红色", "蓝色", "绿色"]  # labels-file order

    rows = list(csv.DictReader(io.StringIO(report_csv.read_text(encoding="utf-8"))))
    assert [r["label"] for r in rows] == ["红色", "蓝色", "绿色", "(all)"]
    assert rows[-1]["images"] == "8" and float(rows[-1]["top1"]) == pytest.approx(report["top1"])
    assert "top-1" in err and "红色" in out

    # Without --labels the folder names are the labels.
    code, out, err = run_cli(capsys, "classify", by_label, "--eval", "--checkpoint", tiny_run.out, "--json", "-",
                             "--workers", 0)
    assert code == 0, err
    assert json.loads(out)["labels"] == 3


def test_cli_errors(tiny_run, images, by_label, labels_file, tmp_path, capsys):
    ck = ["--checkpoint", tiny_run.out, "--workers", 0]
    dup = tmp_path / "dup.txt"
    dup.write_text("红色\n红色\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "classify", images[0], *ck, "--labels", dup)
    assert code == 1 and "repeats the label" in err
    code, _, err = run_cli(capsys, "classify", images[0], *ck)
    assert code == 2 and "--labels" in err
    code, _, err = run_cli(capsys, "classify", images[0], *ck, "--labels", labels_file, "--template", "没有占位")
    assert code == 2 and "--template" in err
    code, _, err = run_cli(capsys, "classify", images[0], *ck, "--labels", labels_file, "--eval")
    assert code == 2 and "--eval takes one folder" in err
    shutil.copy(images[0], by_label / "loose.jpg")  # not in a label folder
    code, _, err = run_cli(capsys, "classify", by_label, "--eval", *ck, "--labels", labels_file)
    assert code == 1 and "loose.jpg" in err and "sub-folder" in err
    (by_label / "loose.jpg").unlink()
    (by_label / "白色").mkdir()
    shutil.copy(images[0], by_label / "白色" / "x.jpg")
    code, _, err = run_cli(capsys, "classify", by_label, "--eval", *ck, "--labels", labels_file)
    assert code == 1 and "'白色' is not one of the labels" in err


def test_evaluate_refuses_unknown_gold_labels(model, images):
    result = classify(model, images[:2], COLOURS[:2], TEMPLATES)
    with pytest.raises(DataError, match="not one of the labels"):
        evaluate(result, ["红色", "白色"])


def test_classification_inputs_and_output_rows(by_label, labels_file, tmp_path):
    """What `wenlan classify` runs on and writes, without a model: the images and labels
    (--eval: gold labels from the sub-folders), then the CSV/JSON rows of a result."""
    from pathlib import Path

    from wenlan_cli.classify import Classification, accuracy_rows, classification_inputs, prediction_items, prediction_rows

    inputs = classification_inputs([by_label], None, evaluate=True)
    assert inputs.labels == sorted(COLOURS[:3]) and len(inputs.paths) == 8
    assert inputs.gold_of(inputs.paths[:1]) == [inputs.paths[0].parent.name]
    assert classification_inputs([by_label], labels_file, evaluate=False).labels == COLOURS
    with pytest.raises(UsageError, match="give --labels FILE"):
        classification_inputs([by_label], None, evaluate=False)
    with pytest.raises(UsageError, match="--eval takes one folder"):
        classification_inputs([by_label, by_label], None, evaluate=True)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no images"):
        classification_inputs([tmp_path / "empty"], labels_file, evaluate=False)

    scores = torch.tensor([[0.9, 0.1], [0.2, 0.4]])
    result = Classification(paths=[Path("a.jpg"), Path("b.jpg")], labels=["猫", "狗"], scores=scores,
                            probabilities=torch.tensor([[0.75, 0.25], [0.4, 0.6]]),
                            top_scores=torch.tensor([[0.9, 0.1], [0.4, 0.2]]), top_indices=torch.tensor([[0, 1], [1, 0]]))
    assert prediction_rows(result)[2] == ["b.jpg", 1, "狗", "0.400000", "0.600000"]
    assert prediction_items(result)[0]["predictions"][1] == {"rank": 2, "label": "狗", "score": pytest.approx(0.1), "probability": 0.25}
    report = evaluate(result, ["猫", "猫"])
    assert accuracy_rows(report) == [["猫", 2, 1, 2, 50.0, 100.0], ["(all)", 2, 1, 2, 50.0, 100.0]]
