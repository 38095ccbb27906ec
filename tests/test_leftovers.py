"""No half-written leftovers: temporary files go on every failure path, a dataset appears
whole or not at all (and a half one is recognised and replaced), a failed pretrain start
or first `wenlan index` leaves no folder behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wenlan_cli.cli import main
from wenlan_cli.data import synth_folder
from wenlan_cli.data.aic_icc import AIC_SPLITS
from wenlan_cli.data.synthetic import write_synthetic_dataset
from wenlan_cli.errors import DataError, UsageError
from wenlan_cli.search import html as html_module
from wenlan_cli.search import update_index

TEST_IMAGES = Path("ai_challenger_caption_test_a_20180103") / "caption_test_a_images_20180103"
SMALL = ["--train", "6", "--val", "2", "--test", "0", "--image-size", "32"]


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if ".tmp" in p.name or ".partial" in p.name)


# --------------------------------------------------------------------------- search --html


@pytest.fixture(scope="module")
def small_index(tmp_path_factory, tiny_run, synth_dir):
    root = tmp_path_factory.mktemp("html")
    (root / "photos").mkdir()
    for i, src in enumerate(sorted((synth_dir / TEST_IMAGES).glob("*.jpg"))[:2]):
        shutil.copy(src, root / "photos" / f"p{i}.jpg")
    update_index(root / "photos", root / "idx", tiny_run.out, workers=0)
    return root / "idx"


def test_search_html_onto_a_folder_is_refused_without_a_temporary_file(small_index, tmp_path, capsys):
    folder = tmp_path / "pages"
    folder.mkdir()
    code, _, err = run_cli(capsys, "search", "红色", "--index", small_index, "--html", folder)
    assert code == 2 and "--html" in err and "is a folder" in err
    assert leftovers(tmp_path) == [] and list(folder.iterdir()) == []


def test_search_html_removes_its_temporary_file_when_the_rename_fails(small_index, tmp_path, capsys, monkeypatch):
    def fail(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(html_module.os, "replace", fail)
    code, _, err = run_cli(capsys, "search", "红色", "--index", small_index, "--html", tmp_path / "hits.html")
    assert code == 1 and "No space left" in err
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- data synth


def test_data_synth_failing_midway_leaves_nothing(tmp_path, capsys, monkeypatch):
    def fail_after_some_images(out_dir, progress=None, **settings):
        images = Path(out_dir) / "some-images"
        images.mkdir()
        (images / "a.jpg").write_bytes(b"x")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("wenlan_cli.data.synthetic.write_synthetic_dataset", fail_after_some_images)
    code, _, err = run_cli(capsys, "data", "synth", tmp_path / "out", *SMALL)
    assert code == 1 and "No space left" in err
    assert list(tmp_path.iterdir()) == []


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_data_synth_removes_what_a_killed_run_left_and_writes_the_whole_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    killed = tmp_path / f".synth.partial-{_dead_pid()}"
    (killed / "half").mkdir(parents=True)
    (killed / synth_folder.PARTIAL_MARKER).write_text("")
    unrelated = tmp_path / ".synth.partial-notes"  # not ours: no marker
    unrelated.mkdir()
    code, out_text, err = run_cli(capsys, "data", "synth", out, *SMALL)
    assert code == 0, err
    assert not killed.exists() and unrelated.exists()
    assert (out / AIC_SPLITS["train"].release / AIC_SPLITS["train"].annotations).is_file()
    assert not (out / synth_folder.PARTIAL_MARKER).exists()
    assert len(list((out / AIC_SPLITS["train"].release / AIC_SPLITS["train"].images).glob("*.jpg"))) == 6


def test_data_synth_recognises_and_replaces_a_half_written_dataset(tmp_path, capsys):
    out = tmp_path / "synth"
    write_synthetic_dataset(out, train=6, val=2, test=0, image_size=32)
    val = AIC_SPLITS["val"]
    (out / val.release / val.annotations).unlink()  # killed while writing the val images
    assert synth_folder.is_half_written(out)
    code, out_text, err = run_cli(capsys, "data", "synth", out, *SMALL)
    assert code == 0, err
    assert "half-written" in out_text + err
    assert (out / val.release / val.annotations).is_file()
    assert not synth_folder.is_half_written(out)


def test_data_synth_still_refuses_a_whole_dataset_or_other_files(tmp_path, capsys):
    whole = write_synthetic_dataset(tmp_path / "whole", train=6, val=2, test=0, image_size=32)
    before = sorted(p.relative_to(whole) for p in whole.rglob("*"))
    code, _, err = run_cli(capsys, "data", "synth", whole, *SMALL)
    assert code == 2 and "not empty" in err
    assert sorted(p.relative_to(whole) for p in whole.rglob("*")) == before
    mine = tmp_path / "mine"
    (mine / AIC_SPLITS["val"].release / AIC_SPLITS["val"].images).mkdir(parents=True)
    (mine / AIC_SPLITS["val"].release / AIC_SPLITS["val"].images / "holiday.jpg").write_bytes(b"x")  # not a generated name
    assert not synth_folder.is_half_written(mine)
    code, _, err = run_cli(capsys, "data", "synth", mine, *SMALL)
    assert code == 2 and (mine / AIC_SPLITS["val"].release / AIC_SPLITS["val"].images / "holiday.jpg").exists()


def test_data_synth_into_an_existing_empty_folder(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "data", "synth", tmp_path / "empty", *SMALL)
    assert code == 0, err
    assert (tmp_path / "empty" / AIC_SPLITS["val"].release / AIC_SPLITS["val"].annotations).is_file()
    assert leftovers(tmp_path) == []


# --------------------------------------------------------------------------- pretrain


def test_a_failed_pretrain_start_removes_the_run_directory_it_made(tmp_path, tiny_config):
    from wenlan_cli.train.loop import Pretrainer

    (tmp_path / "nodata").mkdir()
    out = tmp_path / "runs" / "bad"
    with pytest.raises(DataError):
        Pretrainer(tiny_config(out, tmp_path / "nodata")).run()
    assert not out.exists()


def test_a_start_failing_after_writing_its_config_removes_only_what_it_wrote(tmp_path, synth_dir, tiny_config, monkeypatch):
    from wenlan_cli.train.loop import Pretrainer

    def boom(*args, **kwargs):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(Pretrainer, "train_step", boom)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(RuntimeError):
        Pretrainer(tiny_config(out, synth_dir, steps=2)).run()
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # train_config.json, metrics.jsonl went


def test_discard_failed_start_keeps_a_run_with_a_checkpoint_and_a_made_folder_goes(tmp_path):
    from wenlan_cli.engine.run_dir import discard_failed_start

    fresh = tmp_path / "fresh"
    with pytest.raises(KeyboardInterrupt), discard_failed_start(fresh):
        fresh.mkdir()
        (fresh / "train_config.json").write_text("{}")
        raise KeyboardInterrupt
    assert not fresh.exists()
    good = tmp_path / "good"
    with pytest.raises(RuntimeError), discard_failed_start(good):
        (good / "step-00000002").mkdir(parents=True)
        for name in ("config.json", "model.safetensors"):
            (good / "step-00000002" / name).write_text("x")
        raise RuntimeError("the loss became nan")
    from wenlan_cli.engine.checkpoint import is_checkpoint

    assert is_checkpoint(good / "step-00000002") and good.is_dir()
    with pytest.raises(RuntimeError), discard_failed_start(tmp_path / "other", enabled=False):
        (tmp_path / "other").mkdir()
        raise RuntimeError("not the main process")
    assert (tmp_path / "other").is_dir()


def test_a_failed_pretrain_command_leaves_no_run_directory(tmp_path, capsys):
    (tmp_path / "nodata").mkdir()
    code, _, err = run_cli(capsys, "pretrain", "--dataset", "aic-icc", "--data-dir", tmp_path / "nodata",
                           "--out", tmp_path / "run", "--workers", "0")
    assert code == 1 and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# --------------------------------------------------------------------------- index


def test_a_failed_first_index_leaves_no_folder(tmp_path, tiny_run, capsys):
    (tmp_path / "empty").mkdir()
    code, _, err = run_cli(capsys, "index", tmp_path / "empty", "--out", tmp_path / "idx", "--checkpoint", tiny_run.out)
    assert code == 1 and "nothing to index" in err
    assert not (tmp_path / "idx").exists()
    made = tmp_path / "made"
    made.mkdir()
    with pytest.raises(DataError):
        update_index(tmp_path / "empty", made, tiny_run.out)
    assert made.is_dir() and list(made.iterdir()) == []  # the user's empty folder stays, without .lock


def test_a_second_index_run_that_fails_keeps_the_index(tmp_path, tiny_run, synth_dir):
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((synth_dir / TEST_IMAGES).glob("*.jpg"))[0], photos / "a.jpg")
    update_index(photos, tmp_path / "idx", tiny_run.out, workers=0)
    (photos / "bad.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(DataError):
        update_index(photos, tmp_path / "idx", workers=0)
    assert json.loads((tmp_path / "idx" / "index.json").read_text(encoding="utf-8"))["count"] == 1


def test_another_running_index_is_not_disturbed(tmp_path, tiny_run, synth_dir):
    import fcntl

    idx = tmp_path / "idx"
    idx.mkdir()
    photos = tmp_path / "photos"
    photos.mkdir()
    shutil.copy(sorted((synth_dir / TEST_IMAGES).glob("*.jpg"))[0], photos / "a.jpg")
    with open(idx / ".lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(UsageError, match="another"):
            update_index(photos, idx, tiny_run.out)
        assert (idx / ".lock").exists()
    assert os.path.isdir(idx)
