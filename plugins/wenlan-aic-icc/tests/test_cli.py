"""The command line end to end on tiny data: finetune-caption -> caption -> score, and errors."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wenlan_cli.cli import main

from wenlan_aic_icc import _java
from wenlan_aic_icc.scoring import load_predictions

needs_java = pytest.mark.skipif(_java.find_java() is None, reason="needs Java (PTB tokenizer)")
VAL_ANNOTATIONS = "ai_challenger_caption_validation_20170910/caption_validation_annotations_20170910.json"
TEST_IMAGES = "ai_challenger_caption_test_a_20180103/caption_test_a_images_20180103"


def run(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


@needs_java
def test_finetune_caption_writes_best_final_metrics_and_scores(caption_run):
    out, code = caption_run
    assert code == 0
    for name in ("best", "final"):
        files = {p.name for p in (out / name).iterdir()}
        assert {"config.json", "model.safetensors", "vocab.txt", "metrics.jsonl"} <= files
        config = json.loads((out / name / "config.json").read_text())
        assert config["kind"] == "wenlan-caption" and config["head"]["d_model"] == 32
        assert config["model"]["name"] == "brivl-tiny" and config["pretrain_checkpoint"]
    assert not list(out.glob(".tmp-*"))
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines if "loss" in x] == [2, 4, 6]
    evals = [x for x in lines if "CIDEr" in x]
    assert [x["step"] for x in evals] == [3, 6]
    scores = json.loads((out / "scores.json").read_text())
    best = max(evals, key=lambda x: (x["CIDEr"], x["step"]))  # a tie goes to the later step
    assert scores["step"] == best["step"] and scores["images"] == 10
    assert set(scores["metrics"]) == {"Bleu_1", "Bleu_2", "Bleu_3", "Bleu_4", "ROUGE_L", "CIDEr"}  # --no-meteor


@needs_java
def test_caption_reports_the_same_val_scores_as_finetune_caption(caption_run, cap_data, capsys, tmp_path):
    out, _ = caption_run
    scores = json.loads((out / "scores.json").read_text())
    preds, report = tmp_path / "val.json", tmp_path / "scores.json"
    code, _, err = run(
        capsys, "caption", "--checkpoint", out, "--dataset", "synth", "--data-dir", cap_data, "--split", "val",
        "--score", "--no-meteor", "-o", preds, "--scores-output", report,
    )
    assert code == 0, err
    assert json.loads(report.read_text())["metrics"] == scores["metrics"]
    # ... and `wenlan score` on the written file against the annotation file agrees too.
    code, table, err = run(capsys, "score", "--pred", preds, "--ref", cap_data / VAL_ANNOTATIONS, "--no-meteor", "--workers", "2", "-o", tmp_path / "s2.json")
    assert code == 0, err
    assert json.loads((tmp_path / "s2.json").read_text())["metrics"] == scores["metrics"]
    assert "CIDEr" in table and "BLEU-4" in table and "sacreBLEU" in table


def test_caption_images_round_trip_through_the_submission_format(caption_run, cap_data, capsys, tmp_path):
    from wenlan_aic_icc.checkpoint import load_caption_checkpoint
    from wenlan_aic_icc.decoding import DecodeOptions
    from wenlan_aic_icc.generate import caption_records
    from wenlan_cli.data.records import ImageTextRecord

    out, _ = caption_run
    folder = cap_data / TEST_IMAGES
    code, stdout, err = run(capsys, "caption", folder, "--checkpoint", out / "final", "--beam-size", "2")
    assert code == 0, err
    entries = json.loads(stdout)
    names = sorted(p.name for p in folder.iterdir())
    assert [e["image_id"] for e in entries] == names
    assert all(isinstance(e["caption"], str) and e["caption"] for e in entries)
    written = tmp_path / "sub.json"
    code, _, _ = run(capsys, "caption", *sorted(folder.iterdir()), "--checkpoint", out / "final", "--beam-size", "2", "-o", written)
    assert code == 0
    assert load_predictions(written) == {e["image_id"]: e["caption"] for e in entries}
    # The same captions as the library gives for those files.
    loaded = load_caption_checkpoint(out / "final")
    records = [ImageTextRecord(image_id=p.name, image_path=p, captions=[]) for p in sorted(folder.iterdir())]
    direct = caption_records(loaded.model, loaded.tokenizer, records, loaded.settings, device="cpu",
                             options=DecodeOptions(beam_size=2, max_len=loaded.decode.max_len))
    assert direct.captions == load_predictions(written)


def test_caption_refuses_two_images_with_the_same_name(caption_run, cap_data, capsys, tmp_path):
    out, _ = caption_run
    image = next((cap_data / TEST_IMAGES).iterdir())
    (tmp_path / "a").mkdir()
    shutil.copy(image, tmp_path / "a" / image.name)
    code, _, err = run(capsys, "caption", image, tmp_path / "a", "--checkpoint", out)
    assert code == 2 and image.name in err and "Traceback" not in err


@pytest.mark.parametrize(
    "args, code, message",
    [
        (["caption", "--checkpoint", "CKPT"], 2, "give image files"),
        (["caption", "IMG", "--checkpoint", "CKPT", "--score"], 2, "--score needs --dataset"),
        (["caption", "IMG", "--checkpoint", "PRETRAIN"], 1, "not a caption checkpoint"),
        (["caption", "IMG", "--checkpoint", "MISSING"], 1, "does not exist"),
        (["caption", "MISSING", "--checkpoint", "CKPT"], 1, "does not exist"),
        (["caption", "IMG", "--checkpoint", "CKPT", "--beam-size", "0"], 2, "--beam-size"),
        (["score", "--pred", "MISSING", "--ref", "REF"], 1, "does not exist"),
        (["score", "--pred", "EMPTYPRED", "--ref", "REF"], 1, "empty list"),
        (["finetune-caption", "--checkpoint", "PRETRAIN", "--freeze-tower", "--train-top-blocks", "1"], 2, "not both"),
        (["finetune-caption", "--checkpoint", "PRETRAIN", "--train-top-blocks", "99", "--data-dir", "DATA", "--out", "OUT"], 2, "choose 0 to"),
        (["finetune-caption", "--checkpoint", "MISSING", "--out", "OUT"], 1, "does not exist"),
        (["finetune-caption", "--checkpoint", "PRETRAIN", "--no-such-option"], 2, "No such option"),
    ],
)
def test_errors_are_one_sentence_with_an_exit_code(args, code, message, caption_run, cap_data, pretrain_checkpoint, capsys, tmp_path):
    out, _ = caption_run
    (tmp_path / "empty.json").write_text("[]")
    names = {
        "CKPT": out, "PRETRAIN": pretrain_checkpoint, "MISSING": tmp_path / "missing", "DATA": cap_data,
        "IMG": next((cap_data / TEST_IMAGES).iterdir()), "REF": cap_data / VAL_ANNOTATIONS,
        "EMPTYPRED": tmp_path / "empty.json", "OUT": tmp_path / "out",
    }
    got, _, err = run(capsys, *[names.get(a, a) for a in args])
    assert got == code, err
    assert message in err and "Traceback" not in err


def test_finetune_caption_help_comes_from_the_plugin(capsys):
    code, out, _ = run(capsys, "finetune-caption", "--help")
    assert code == 0
    for option in ("--checkpoint", "--beam-size", "--freeze-tower", "--train-top-blocks", "--char-vocab", "--eval-every"):
        assert option in out


def test_finetune_caption_option_defaults_are_the_library_defaults():
    import dataclasses
    import inspect

    from wenlan_aic_icc.commands import finetune_caption
    from wenlan_aic_icc.finetune import FinetuneConfig

    library = {f.name: f.default for f in dataclasses.fields(FinetuneConfig) if f.default is not dataclasses.MISSING}
    for name, parameter in inspect.signature(finetune_caption).parameters.items():
        if name in library:
            assert parameter.default == library[name], name


@needs_java
def test_score_from_the_console_script_with_worker_processes(caption_run, cap_data, tmp_path):
    """The scorer's forkserver workers start from the installed `wenlan` script too."""
    script = Path(sys.executable).with_name("wenlan")
    if not script.exists():
        pytest.skip("the wenlan console script is not installed next to this Python")
    out, _ = caption_run
    scores = json.loads((out / "scores.json").read_text())
    preds = tmp_path / "val.json"
    preds.write_text(json.dumps([{"image_id": k, "caption": v} for k, v in _best_captions(out, cap_data).items()], ensure_ascii=False))
    result = subprocess.run(
        [str(script), "score", "--pred", str(preds), "--ref", str(cap_data / VAL_ANNOTATIONS), "--no-meteor", "--workers", "2", "-o", str(tmp_path / "s.json")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "s.json").read_text())["metrics"] == scores["metrics"]


def _best_captions(out, cap_data) -> dict[str, str]:
    from wenlan_aic_icc.checkpoint import load_caption_checkpoint
    from wenlan_aic_icc.generate import caption_records
    from wenlan_cli.data.sources import load_records

    loaded = load_caption_checkpoint(out)
    records = load_records("synth", cap_data, "val")
    return caption_records(loaded.model, loaded.tokenizer, records, loaded.settings, device="cpu", options=loaded.decode).captions


@pytest.mark.slow
def test_finetune_caption_stopped_by_sigterm_keeps_its_work_and_exits_143(cap_data, pretrain_checkpoint, tmp_path):
    """A scheduler's SIGTERM: the run validates, writes final/ and exits 128 + 15 like pretrain,
    so a job script does not mistake a stopped run for a finished one."""
    import signal
    import time

    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-m", "wenlan_cli", "finetune-caption", "--checkpoint", str(pretrain_checkpoint), "--dataset", "synth",
         "--data-dir", str(cap_data), "--out", str(out), "--steps", "5000", "--batch-size", "8", "--log-every", "1",
         "--eval-every", "0", "--no-meteor", "--workers", "0",
         "--d-model", "32", "--layers", "1", "--heads", "2", "--ff-dim", "64", "--max-len", "24"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 120
    while not ((out / "metrics.jsonl").exists() and (out / "metrics.jsonl").read_text().count("loss") >= 2):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it was signalled"
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=180)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "Stopped (SIGTERM)" in err
    assert (out / "final" / "model.safetensors").exists() and (out / "scores.json").exists()
