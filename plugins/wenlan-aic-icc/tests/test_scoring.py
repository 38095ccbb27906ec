"""Official AIC-ICC caption scoring: exactness against pycocoevalcap, hand checks, errors.

The METEOR JVM takes seconds to start, so only the module-scoped `official`
fixture scores with METEOR (once through wenlan, once through pycocoevalcap
directly); every other test passes meteor=False and compares to it.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys

import pytest

from wenlan_aic_icc import _java, scoring
from wenlan_aic_icc.scoring import (
    JavaError,
    ScoringWarning,
    format_metrics,
    load_predictions,
    load_references,
    metrics_x100,
    score_captions,
    score_files,
)
from wenlan_cli.errors import DataError, UsageError

needs_java = pytest.mark.skipif(_java.find_java() is None, reason="needs Java (PTB tokenizer, METEOR)")

SUBJECTS = ["一个男人", "两个女孩", "一群孩子", "一位老人", "一个穿着红色衣服的女人", "三个运动员"]
PLACES = ["在宽阔的马路上", "在绿油油的草地上", "在海边的沙滩上", "在明亮的房间里", "在热闹的街道旁"]
ACTIONS = ["骑着自行车", "打篮球", "散步", "看着远处的大海", "吃东西", "放风筝"]


def _caption(rng: random.Random) -> str:
    return rng.choice(SUBJECTS) + rng.choice(PLACES) + rng.choice(ACTIONS)


def _dataset() -> tuple[dict[str, str], dict[str, list[str]]]:
    """30 images, 3-5 references each, with the untidiness real files have."""
    rng = random.Random(7)
    predictions, references = {}, {}
    for i in range(30):
        image_id = f"{i:04x}{rng.getrandbits(64):016x}.jpg"
        references[image_id] = [_caption(rng) for _ in range(rng.choice([3, 4, 5]))]
        predictions[image_id] = _caption(rng)
    ids = list(references)
    predictions[ids[0]] += "。"  # the protocol drops '。' ...
    predictions[ids[1]] = "  \n" + predictions[ids[1]] + " \n"  # ... and strips
    references[ids[2]][0] = "\n" + references[ids[2]][0] + "。\n"
    references[ids[3]].append("   ")  # whitespace-only references are left out
    references[ids[4]][1] = "一个男人\n在马路上 骑着 自行车"  # inner newline and spaces
    predictions[ids[5]] = "一个(男人)在NBA球场上打3.5小时的篮球!"  # PTB: brackets, case, numbers, '!'
    references[ids[6]][0] = "两个女孩，在“海边”玩耍"
    predictions[ids[8]] = predictions[ids[9]]  # models repeat captions (segmented once)
    return predictions, references


def _segment(text: str) -> str:
    import jieba

    return " ".join(jieba.cut(text.strip().replace("。", ""), cut_all=False))


def _pycocoevalcap_directly(predictions, references, *, segmented=False, meteor=True) -> dict:
    """The protocol written out with pycocoevalcap's own classes, serially."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    scoring.segment("预热")  # load jieba's dictionary quietly
    prep = (lambda c: c) if segmented else _segment
    keep = (lambda c: c.strip()) if segmented else (lambda c: c.strip().replace("。", "").strip())
    gts = {k: [{"caption": prep(c)} for c in refs if keep(c)] for k, refs in references.items()}
    res = {k: [{"caption": _segment(predictions[k])}] for k in references}
    tokenizer = PTBTokenizer()
    gts, res = tokenizer.tokenize(gts), tokenizer.tokenize(res)
    out = {}
    bleus, _ = Bleu(4).compute_score(gts, res, verbose=0)
    for i, value in enumerate(bleus, 1):
        out[f"Bleu_{i}"] = value
    if meteor:
        out["METEOR"] = Meteor().compute_score(gts, res)[0]
    out["ROUGE_L"] = Rouge().compute_score(gts, res)[0]
    out["CIDEr"] = Cider().compute_score(gts, res)[0]
    return out


@pytest.fixture(scope="module")
def data():
    return _dataset()


@pytest.fixture(scope="module")
def official(data):
    """(wenlan's parallel result with METEOR, pycocoevalcap's numbers) on `data`."""
    from concurrent.futures import ThreadPoolExecutor

    predictions, references = data
    # Side by side, so that the two METEOR JVMs load their tables at the same time.
    with ThreadPoolExecutor(1) as thread:
        direct = thread.submit(_pycocoevalcap_directly, predictions, references)
        ours = score_captions(predictions, references, workers=2)
        return ours, direct.result()


def _without_meteor(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k != "METEOR"}


# --------------------------------------------------------------------------- exactness


@needs_java
def test_parallel_scores_equal_pycocoevalcap_exactly(official):
    ours, direct = official
    assert list(ours["metrics"]) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "METEOR", "ROUGE_L", "CIDEr"]
    assert ours["metrics"] == direct  # exact float equality, every metric
    assert all(type(v) is float for v in ours["metrics"].values())
    assert ours["warnings"] == []
    assert ours["images"] == 30
    assert 0.1 < ours["metrics"]["Bleu_1"] < 1 and 0 < ours["metrics"]["CIDEr"] < 10


@needs_java
def test_in_process_run_gives_the_same_numbers(data, official):
    ours = score_captions(*data, meteor=False, workers=1)
    assert ours["metrics"] == _without_meteor(official[0]["metrics"])
    assert ours["sacrebleu"] == official[0]["sacrebleu"]


def test_segmentation_is_jieba_precise_mode_after_strip_and_full_stop_removal():
    import jieba

    text = "\n 一个穿着红色衣服的女人在马路上骑着自行车。 "
    assert scoring.segment(text) == " ".join(jieba.cut("一个穿着红色衣服的女人在马路上骑着自行车", cut_all=False))


def test_jieba_stays_quiet_in_a_fresh_process():
    code = "from wenlan_aic_icc.scoring import segment; print(segment('一个男人在街上走。'))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "Building prefix dict" not in proc.stderr and "Loading model" not in proc.stderr
    assert "。" not in proc.stdout and " " in proc.stdout.strip()


# --------------------------------------------------------------------------- hand checks


@needs_java
def test_bleu_1_by_hand():
    # Latin words pass through jieba and the PTB tokenizer unchanged, so the
    # tokens are exactly these. Prediction: the cat the cat on mat (6 tokens).
    # Reference: the cat is on the mat (6 tokens). Clipped unigram matches:
    # "the" 2 (the reference has 2), "cat" 1 (clipped from 2), "on" 1, "mat" 1
    # -> 5 of 6, so precision 5/6; lengths are equal so the brevity penalty
    # is 1 (up to pycocoevalcap's 1e-9 / 1e-15 smoothing terms).
    result = score_captions(
        {"a.jpg": "the cat the cat on mat"}, {"a.jpg": ["the cat is on the mat"]}, meteor=False, sacrebleu=False, workers=1
    )
    assert result["sacrebleu"] is None and list(result["metrics"]) == ["Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"]
    assert result["metrics"]["Bleu_1"] == pytest.approx(5 / 6, abs=1e-8)
    # Bigrams: "the cat", "cat the", "the cat", "cat on", "on mat"; the reference
    # has "the cat" once and "cat on"/"on mat" never -> 1 of 5 clipped matches.
    assert result["metrics"]["Bleu_2"] == pytest.approx((5 / 6 * 1 / 5) ** 0.5, abs=1e-8)


@needs_java
def test_prediction_equal_to_all_references_scores_bleu_4_one_and_cider_ten():
    # Two images with disjoint words, so every n-gram has a positive idf; each
    # prediction equals each of its references: every BLEU precision is 1 and
    # each CIDEr-D cosine is 1 with no length penalty -> 10 x mean(1) = 10.
    predictions = {"a.jpg": "一个男人在马路上骑着自行车", "b.jpg": "两只小狗在草地上追着皮球"}
    references = {k: [v] * 5 for k, v in predictions.items()}
    result = score_captions(predictions, references, meteor=False, workers=1)
    for n in range(1, 5):
        assert result["metrics"][f"Bleu_{n}"] == pytest.approx(1.0, abs=1e-8)
    assert result["metrics"]["ROUGE_L"] == pytest.approx(1.0, abs=1e-12)
    assert result["metrics"]["CIDEr"] == pytest.approx(10.0, abs=1e-9)
    assert result["sacrebleu"]["score"] == pytest.approx(100.0)


@needs_java
def test_metrics_x100_and_format(official):
    ours = official[0]
    table = metrics_x100(ours)
    assert table["CIDEr"] == 100 * ours["metrics"]["CIDEr"]
    assert table["sacreBLEU"] == ours["sacrebleu"]["score"]
    line = format_metrics(ours, digits=1)
    assert line.startswith("BLEU-1 ") and "ROUGE-L" in line and "sacreBLEU" in line and "\n" not in line


# --------------------------------------------------------------------------- sacreBLEU


@needs_java
def test_sacrebleu_figure_and_signature(data, official):
    from sacrebleu.metrics import BLEU

    predictions, references = data
    ours = official[0]["sacrebleu"]
    assert "tok:zh" in ours["signature"] and "nrefs:var" in ours["signature"]  # 3-5 references per image
    # One plain corpus_score call over None-padded reference streams gives the same number.
    clean = {k: [c.strip().replace("。", "") for c in v] for k, v in references.items()}
    clean = {k: [c for c in v if c.strip()] for k, v in clean.items()}
    streams = [[v[j] if j < len(v) else None for v in clean.values()] for j in range(5)]
    metric = BLEU(tokenize="zh")
    expected = metric.corpus_score([predictions[k].strip().replace("。", "") for k in clean], streams)
    assert ours["score"] == expected.score
    assert ours["signature"] == str(metric.get_signature())


# --------------------------------------------------------------------------- Java


def test_without_java_scoring_stops_with_a_clear_error(data, monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # an empty folder: no java
    with pytest.raises(JavaError, match=r"needs Java .*'java' was not found.*PTB tokenizer"):
        score_captions(*data, workers=1)


@needs_java
def test_meteor_is_skipped_with_one_warning_when_its_jvm_fails(data, official, monkeypatch):
    failing = [sys.executable, "-c", "import sys; sys.stderr.write('Error: simulated JVM failure\\n'); sys.exit(1)"]
    monkeypatch.setattr(_java, "meteor_command", lambda java: failing)
    with pytest.warns(ScoringWarning, match="METEOR skipped"):
        result = score_captions(*data, workers=1)
    assert result["warnings"] == ["METEOR skipped: the METEOR JVM did not start: Error: simulated JVM failure"]
    assert "METEOR" not in result["metrics"]
    assert result["metrics"] == _without_meteor(official[0]["metrics"])


@needs_java
def test_ptb_line_ends_other_than_newline_do_not_shift_captions():
    java = _java.require_java()
    lines = _java.ptb_tokenize(java, ["A\rB", "c\u2028d\x0be\x0cf\u2029g", "h\ni", "Hello, (World)!"])
    assert lines == ["a b", "c d e f g", "h i", "hello -lrb- world -rrb-"]


# --------------------------------------------------------------------------- files


@needs_java
def test_aic_icc_annotation_file_with_stray_whitespace(tmp_path, data, official):
    predictions, references = data
    annotation = tmp_path / "caption_validation_annotations_20170910.json"
    untidy = {}  # the same captions, in the same order, with stray whitespace and blank ones
    for i, (k, v) in enumerate(references.items()):
        untidy[k] = ["\n" + v[0] + "\n"] + [f"  {c}\r\n" for c in v[1:]] + ([" \n "] if i % 2 else [])
    annotation.write_text(
        json.dumps([{"url": f"http://example.com/{k}", "image_id": k, "caption": v} for k, v in untidy.items()], ensure_ascii=False),
        encoding="utf-8",
    )
    submission = tmp_path / "submission.json"
    submission.write_text(json.dumps([{"image_id": k, "caption": v} for k, v in predictions.items()], ensure_ascii=False), encoding="utf-8")

    loaded = load_references(annotation)
    assert list(loaded) == list(references) and loaded == untidy  # captions come back untouched
    assert load_predictions(submission) == predictions
    result = score_files(submission, annotation, meteor=False, workers=1)
    assert result["metrics"] == _without_meteor(official[0]["metrics"])  # the untidiness changes nothing
    assert result["references"] == official[0]["references"]


@needs_java
def test_coco_style_reference_file_is_used_as_already_segmented(tmp_path, data):
    predictions, references = data
    ids = list(references)[:8]
    names = {k: 1000 + i for i, k in enumerate(ids)}  # the official tool used hashed integer ids
    pairs = [(k, c) for k in ids for c in references[k] if c.strip()]
    coco = {
        "annotations": [{"image_id": names[k], "id": n, "caption": _segment(c)} for n, (k, c) in enumerate(pairs)],
        "images": [{"id": names[k], "file_name": k} for k in ids],
        "type": "captions",
    }
    path = tmp_path / "id_to_words.json"
    path.write_text(json.dumps(coco, ensure_ascii=False), encoding="utf-8")
    submission = tmp_path / "submission.json"
    submission.write_text(json.dumps([{"image_id": k, "caption": predictions[k]} for k in ids], ensure_ascii=False), encoding="utf-8")

    loaded = load_references(path)
    assert list(loaded) == ids
    result = score_files(submission, path, meteor=False, workers=1)
    expected = _pycocoevalcap_directly({k: predictions[k] for k in ids}, loaded, segmented=True, meteor=False)
    assert result["metrics"] == expected
    assert result["warnings"] == []


# --------------------------------------------------------------------------- errors


def test_missing_ids_are_named_with_their_count(data):
    predictions, references = data
    ids = list(references)
    partial = {k: v for k, v in predictions.items() if k not in ids[3:10]}
    with pytest.raises(DataError) as err:
        score_captions(partial, references, workers=1)
    message = str(err.value)
    assert "7 of 30 reference images have no predicted caption" in message
    assert repr(ids[3]) in message and repr(ids[7]) in message and repr(ids[9]) not in message and "..." in message


def test_extra_ids_are_named(data):
    predictions, references = data
    with pytest.raises(DataError, match=r"predictions: 2 image ids are not in references \('x\.jpg', 'y\.jpg'\)"):
        score_captions({**predictions, "x.jpg": "一只猫", "y.jpg": "一只狗"}, references, workers=1)


@pytest.mark.parametrize("caption", ["", "   ", "\n\t", "。", " 。\n"])
def test_empty_predicted_caption_is_named(data, caption):
    predictions, references = data
    key = list(references)[4]
    with pytest.raises(DataError, match=rf"1 predicted caption is empty or only whitespace/'。' \(image ids '{key}'\)"):
        score_captions({**predictions, key: caption}, references, workers=1)


def test_image_without_a_usable_reference_is_named(data):
    predictions, references = data
    key = list(references)[2]
    with pytest.raises(DataError, match=rf"references: 1 image has no non-empty reference caption \(image ids '{key}'\)"):
        score_captions(predictions, {**references, key: ["  ", "\n。"]}, workers=1)


def test_bad_workers_is_a_usage_error(data):
    with pytest.raises(UsageError, match="workers"):
        score_captions(*data, workers=0)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", r"is empty; expected JSON"),
        ("[{", r"not valid JSON \(.* line 1, column 3\)"),
        ('{"image_id": "a.jpg"}', r"holds an object at the top level; expected a JSON list"),
        ('[{"image_id": "a.jpg", "caption": "x"}, 3]', r"entry 1: is a number"),
        ('[{"image_id": "a.jpg", "caption": ["x"]}]', r"entry 0 \(image_id 'a\.jpg'\): 'caption' is a list; expected one string"),
        ('[{"caption": "x"}]', r"entry 0: 'image_id' is null"),
        ('[{"image_id": "a.jpg", "caption": "x"}, {"image_id": "a.jpg", "caption": "y"}]', r"entry 1: image_id 'a\.jpg' repeats entry 0"),
    ],
)
def test_prediction_file_errors_name_file_and_entry(tmp_path, content, message):
    path = tmp_path / "pred.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message) as err:
        load_predictions(path)
    assert str(path) in str(err.value)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('[{"image_id": "a.jpg", "caption": [1, "x"]}]', r"entry 0 \(image_id 'a\.jpg'\): 'caption' holds a number"),
        ('{"annotations": [{"image_id": 5, "caption": "x"}], "images": [{"id": 6, "file_name": "b"}]}', r"annotations entry 0: image_id 5 is not in"),
        ('[{"image_id": "a.jpg", "caption": ["x"]}, {"image_id": "a.jpg", "caption": ["y"]}]', r"entry 1: image_id 'a\.jpg' repeats entry 0"),
    ],
)
def test_reference_file_errors_name_file_and_entry(tmp_path, content, message):
    path = tmp_path / "ref.json"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataError, match=message):
        load_references(path)


def test_missing_file_is_a_data_error(tmp_path):
    with pytest.raises(DataError, match="nope.json does not exist"):
        score_files(tmp_path / "nope.json", tmp_path / "ref.json")
    assert os.path.exists(tmp_path)


@needs_java
def test_unsegmented_coco_style_references_draw_a_warning(tmp_path):
    path = tmp_path / "ref.json"
    annotations = [{"image_id": 1, "caption": "一个男人在宽阔的马路上骑着自行车"}, {"image_id": 2, "caption": "两只小狗在草地上追着皮球"}]
    path.write_text(json.dumps({"annotations": annotations, "images": [{"id": 1, "file_name": "a"}, {"id": 2, "file_name": "b"}]}), "utf-8")
    submission = tmp_path / "pred.json"
    submission.write_text(json.dumps([{"image_id": "a", "caption": "一个男人"}, {"image_id": "b", "caption": "小狗"}]), "utf-8")
    with pytest.warns(ScoringWarning, match="taken as already segmented"):
        result = score_files(submission, path, meteor=False, sacrebleu=False, workers=1)
    assert len(result["warnings"]) == 1 and "\n" not in result["warnings"][0]
