"""No command overwrites what it reads: an output that is an input, equals another output,
or lies inside an input folder (dataset, image folder, index, checkpoint, the parts of a
run directory a run wrote) is refused with exit 2 before any work.

The property test at the end runs every command with each of its output options pointed
at each of its inputs (the input itself, and a file inside an input folder) and checks
that not one byte of the inputs changed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from pathlib import Path

import pytest

from wenlan_cli.cli import main
from wenlan_cli.errors import UsageError
from wenlan_cli.output_paths import check_outputs, checkpoint_input, file_input, folder_input, run_input

TEST_IMAGES = Path("ai_challenger_caption_test_a_20180103") / "caption_test_a_images_20180103"
VAL_ANNOTATIONS = Path("ai_challenger_caption_validation_20170910") / "caption_validation_annotations_20170910.json"


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


_HASHES: dict[tuple, str] = {}


def snapshot(root: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under `root` (and the folders, as "dir").
    A file is re-read only when its inode, size or mtime changed (any write changes the
    mtime), which keeps the many snapshots of the property test cheap."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames:
            found[os.path.relpath(os.path.join(dirpath, name), root)] = "dir"
        for name in filenames:
            path = os.path.join(dirpath, name)
            info = os.stat(path)
            key = (path, info.st_ino, info.st_size, info.st_mtime_ns)
            if key not in _HASHES:
                with open(path, "rb") as handle:
                    _HASHES[key] = hashlib.sha256(handle.read()).hexdigest()
            found[os.path.relpath(path, root)] = _HASHES[key]
    return found


# --------------------------------------------------------------------------- the rule


def test_the_same_file_is_refused_by_name_symlink_and_hard_link(tmp_path):
    texts = tmp_path / "t.txt"
    texts.write_text("红色\n", encoding="utf-8")
    link = tmp_path / "link.txt"
    link.symlink_to(texts)
    hard = tmp_path / "hard.txt"
    os.link(texts, hard)
    for output in (texts, link, hard, tmp_path / "sub" / ".." / "t.txt"):
        with pytest.raises(UsageError, match=r"--manifest .* would overwrite the file --texts .*t\.txt"):
            check_outputs([("--manifest", output)], file_input("--texts", texts))
    check_outputs([("--manifest", tmp_path / "other.json")], file_input("--texts", texts))


def test_two_outputs_naming_one_file_are_refused(tmp_path):
    with pytest.raises(UsageError, match=r"--output .*a\.npy and --manifest .*a\.npy name the same file"):
        check_outputs([("--output", tmp_path / "a.npy"), ("--manifest", tmp_path / "a.npy")], [])
    check_outputs([("--csv", "-"), ("--json", "-")], [])  # stdout is not a path


def test_an_output_inside_an_input_folder_is_refused_also_through_a_symlinked_parent(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    (tmp_path / "alias").symlink_to(data)
    for output in (data / "x.json", data / "new" / "deeper.json", tmp_path / "alias" / "x.json", data):
        with pytest.raises(UsageError, match="--output .* --data-dir .*data"):
            check_outputs([("--output", output)], folder_input("--data-dir", data))
    check_outputs([("--output", tmp_path / "data-results.json")], folder_input("--data-dir", data))


def test_an_output_hard_linked_to_a_file_inside_an_input_folder_is_refused(tmp_path):
    data = tmp_path / "data"
    (data / "split").mkdir(parents=True)
    annotations = data / "split" / "annotations.json"
    annotations.write_text("[]")
    os.link(annotations, tmp_path / "results.json")
    with pytest.raises(UsageError, match=r"--output .*results\.json is a hard link to .*annotations\.json in the folder --data-dir"):
        check_outputs([("--output", tmp_path / "results.json")], folder_input("--data-dir", data))
    assert annotations.read_text() == "[]"


def test_a_run_directory_counts_by_what_the_run_wrote(tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    inputs = run_input("RUN_DIR", run)
    for output in (run / "metrics.jsonl", run / "train_config.json", run / "recall.json", run / "final" / "x.npy", run):
        with pytest.raises(UsageError, match="RUN_DIR"):
            check_outputs([("--output", output)], inputs)
    check_outputs([("--output", run / "report.html")], inputs)  # a new file beside the run's own
    # --checkpoint naming a checkpoint folder protects all of it; naming a run, as above
    assert [i.folder for i in checkpoint_input("--checkpoint", run / "final")] == [True]
    assert {i.path.name for i in checkpoint_input("--checkpoint", run)} >= {"run", "metrics.jsonl", "final"}


# --------------------------------------------------------------------------- the reported cases


@pytest.fixture
def texts_file(tmp_path):
    path = tmp_path / "t.txt"
    path.write_text("红色的圆形\n蓝色的星星\n", encoding="utf-8")
    return path


def test_encode_refuses_a_manifest_on_its_texts_file(capsys, tiny_run, tmp_path, texts_file):
    before = texts_file.read_bytes()
    code, _, err = run_cli(capsys, "encode", "--texts", texts_file, "--checkpoint", tiny_run.out,
                           "-o", tmp_path / "v.npy", "--manifest", texts_file)
    assert code == 2 and "--manifest" in err and "--texts" in err and "Traceback" not in err
    assert texts_file.read_bytes() == before and not (tmp_path / "v.npy").exists()


def test_encode_refuses_a_manifest_on_an_input_image(capsys, tiny_run, synth_dir, tmp_path):
    images = tmp_path / "images"
    shutil.copytree(synth_dir / TEST_IMAGES, images)
    target = sorted(images.glob("*.jpg"))[0]
    before = snapshot(images)
    for args in (["--manifest", target], ["--manifest", images / "rows.json"]):
        code, _, err = run_cli(capsys, "encode", images, "--checkpoint", tiny_run.out, "-o", tmp_path / "v.npy", *args)
        assert code == 2 and "--manifest" in err and "PATHS" in err
    code, _, err = run_cli(capsys, "encode", target, "--checkpoint", tiny_run.out, "-o", tmp_path / "v.npy", "--manifest", target)
    assert code == 2 and "PATHS" in err
    assert snapshot(images) == before


def test_encode_refuses_one_path_for_vectors_and_manifest(capsys, tiny_run, tmp_path, texts_file):
    code, _, err = run_cli(capsys, "encode", "--texts", texts_file, "--checkpoint", tiny_run.out,
                           "-o", tmp_path / "a.npy", "--manifest", tmp_path / "a.npy")
    assert code == 2 and "--output" in err and "--manifest" in err and "same file" in err
    assert not (tmp_path / "a.npy").exists()


def test_eval_retrieval_refuses_to_write_over_the_annotation_file(capsys, tiny_run, synth_dir, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    before = snapshot(data)
    code, _, err = run_cli(capsys, "eval-retrieval", "--checkpoint", tiny_run.out, "--dataset", "synth",
                           "--data-dir", data, "-o", data / VAL_ANNOTATIONS)
    assert code == 2 and "--output" in err and "--data-dir" in err
    assert snapshot(data) == before


def test_classify_refuses_a_csv_on_its_labels(capsys, tiny_run, synth_dir, tmp_path):
    labels = tmp_path / "labels.txt"
    labels.write_text("圆形\n星形\n", encoding="utf-8")
    code, _, err = run_cli(capsys, "classify", synth_dir / TEST_IMAGES, "--checkpoint", tiny_run.out,
                           "--labels", labels, "--csv", labels)
    assert code == 2 and "--csv" in err and "--labels" in err
    assert labels.read_text(encoding="utf-8") == "圆形\n星形\n"
    code, _, err = run_cli(capsys, "classify", synth_dir / TEST_IMAGES, "--checkpoint", tiny_run.out,
                           "--labels", labels, "--csv", tmp_path / "p.out", "--json", tmp_path / "p.out")
    assert code == 2 and "same file" in err


def test_report_refuses_the_runs_metrics_and_still_writes_its_default_page(capsys, tiny_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run.out, run)
    before = snapshot(run)
    code, _, err = run_cli(capsys, "report", run, "-o", run / "metrics.jsonl", "--examples", "0")
    assert code == 2 and "--output" in err and "RUN_DIR" in err and "metrics.jsonl" in err
    assert snapshot(run) == before
    code, _, err = run_cli(capsys, "report", run, "--examples", "0")  # RUN/report.html: a new file beside the run's
    assert code == 0, err
    assert (run / "report.html").is_file()


def test_pretrain_may_continue_in_the_run_directory_of_its_resume_checkpoint(capsys, tmp_path):
    from wenlan_cli.cli.pretrain import check_run_out
    from wenlan_cli.config import TrainConfig

    run = tmp_path / "run"
    (run / "step-00000004").mkdir(parents=True)
    (run / "step-00000004" / "config.json").write_text("{}")
    check_run_out(TrainConfig(out=str(run), resume=str(run / "step-00000004")), None)
    with pytest.raises(UsageError, match="--out .* --resume"):
        check_run_out(TrainConfig(out=str(run / "step-00000004"), resume=str(run / "step-00000004")), None)


# --------------------------------------------------------------------------- every command


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_run, synth_dir):
    """Copies of everything the commands read, in one folder whose bytes are checked."""
    from wenlan_cli.search import update_index

    root = tmp_path_factory.mktemp("inputs")
    data, run, images = root / "data", root / "run", root / "images"
    shutil.copytree(synth_dir, data)
    shutil.copytree(tiny_run.out, run)
    settings = json.loads((run / "train_config.json").read_text(encoding="utf-8"))
    settings["data_dir"] = str(data)
    (run / "train_config.json").write_text(json.dumps(settings), encoding="utf-8")
    images.mkdir()
    for path in sorted((data / TEST_IMAGES).glob("*.jpg"))[:3]:
        shutil.copy(path, images / path.name)
    (root / "texts.txt").write_text("红色的圆形\n", encoding="utf-8")
    (root / "labels.txt").write_text("圆形\n星形\n", encoding="utf-8")
    (root / "config.json").write_text(json.dumps({"steps": 1}), encoding="utf-8")
    shutil.copy(Path(__file__).resolve().parents[1] / "wenlan_cli" / "model_configs" / "brivl-tiny.json", root / "model.json")
    (root / "weights.pth").write_bytes(b"not really a checkpoint")
    (root / "tokenizer").mkdir()
    (root / "tokenizer" / "vocab.txt").write_text("[PAD]\n[UNK]\n红\n", encoding="utf-8")
    (root / "pred.json").write_text(json.dumps([{"image_id": "a.jpg", "caption": "红色的圆形"}], ensure_ascii=False), encoding="utf-8")
    (root / "ref.json").write_text(json.dumps([{"image_id": "a.jpg", "caption": ["红色的圆形"]}], ensure_ascii=False), encoding="utf-8")
    update_index(images, root / "index", run, workers=0)
    return root


def _image(root: Path) -> Path:
    return sorted((root / "images").glob("*.jpg"))[0]


# command: (arguments before the output, {output option: extra arguments it needs}, {input label: input path})
COMMANDS = {
    "encode images": (
        lambda r: ["encode", r / "images", "--checkpoint", r / "run"],
        {"--output": [], "--manifest": ["--output", "{tmp}/ok.npy"]},
        {"PATHS": lambda r: r / "images", "--checkpoint": lambda r: r / "run"},
    ),
    "encode texts": (
        lambda r: ["encode", "--texts", r / "texts.txt", "--checkpoint", r / "run" / "final"],
        {"--output": [], "--manifest": ["--output", "{tmp}/ok.npy"]},
        {"--texts": lambda r: r / "texts.txt", "--checkpoint": lambda r: r / "run" / "final"},
    ),
    "encode dataset": (
        lambda r: ["encode", "--dataset", "synth", "--data-dir", r / "data", "--checkpoint", r / "run"],
        {"--output": [], "--manifest": ["--output", "{tmp}/ok.npy"]},
        {"--data-dir": lambda r: r / "data"},
    ),
    "eval-retrieval": (
        lambda r: ["eval-retrieval", "--checkpoint", r / "run", "--dataset", "synth", "--data-dir", r / "data"],
        {"--output": []},
        {"--checkpoint": lambda r: r / "run", "--data-dir": lambda r: r / "data"},
    ),
    "index": (
        lambda r: ["index", r / "images", "--checkpoint", r / "run", "--workers", "0"],
        {"--out": []},
        {"IMAGES_DIR": lambda r: r / "images", "--checkpoint": lambda r: r / "run"},
    ),
    "search": (
        lambda r: ["search", "红色的圆形", "--index", r / "index", "--image", _image(r), "--checkpoint", r / "run"],
        {"--html": []},
        {"--index": lambda r: r / "index", "--image": _image, "images folder": lambda r: r / "images",
         "--checkpoint": lambda r: r / "run"},
    ),
    "classify": (
        lambda r: ["classify", r / "images", "--checkpoint", r / "run", "--labels", r / "labels.txt", "--workers", "0"],
        {"--csv": [], "--json": []},
        {"IMAGES": lambda r: r / "images", "--labels": lambda r: r / "labels.txt", "--checkpoint": lambda r: r / "run"},
    ),
    "report": (
        lambda r: ["report", r / "run", "--examples", "1"],
        {"--output": []},
        {"RUN_DIR": lambda r: r / "run", "--data-dir": lambda r: r / "data"},
    ),
    "pretrain": (
        lambda r: ["pretrain", "--config", r / "config.json", "--model", r / "model.json", "--dataset", "synth",
                   "--data-dir", r / "data", "--resume", r / "run" / "final", "--workers", "0"],
        {"--out": []},
        {"--config": lambda r: r / "config.json", "--model": lambda r: r / "model.json", "--data-dir": lambda r: r / "data",
         "--resume": lambda r: r / "run" / "final"},
    ),
    "convert brivl": (
        lambda r: ["convert", "brivl", r / "weights.pth", "--tokenizer", r / "tokenizer", "--model", r / "model.json"],
        {"OUT_DIR": []},
        {"CHECKPOINT": lambda r: r / "weights.pth", "--tokenizer": lambda r: r / "tokenizer", "--model": lambda r: r / "model.json"},
    ),
    "export onnx": (
        lambda r: ["export", "onnx", r / "run", "--dataset", "synth", "--data-dir", r / "data"],
        {"OUT_DIR": []},
        {"CHECKPOINT": lambda r: r / "run", "--data-dir": lambda r: r / "data"},
    ),
    "caption": (
        lambda r: ["caption", r / "images", "--checkpoint", r / "run"],
        {"--output": []},
        {"IMAGES": lambda r: r / "images", "--checkpoint": lambda r: r / "run"},
    ),
    "caption --score": (
        lambda r: ["caption", "--dataset", "synth", "--data-dir", r / "data", "--checkpoint", r / "run", "--score", "--no-meteor"],
        {"--output": [], "--scores-output": ["--output", "{tmp}/ok.json"]},
        {"--data-dir": lambda r: r / "data", "--checkpoint": lambda r: r / "run"},
    ),
    "score": (
        lambda r: ["score", "--pred", r / "pred.json", "--ref", r / "ref.json", "--no-meteor"],
        {"--output": []},
        {"--pred": lambda r: r / "pred.json", "--ref": lambda r: r / "ref.json"},
    ),
    "finetune-caption": (
        lambda r: ["finetune-caption", "--checkpoint", r / "run", "--dataset", "synth", "--data-dir", r / "data"],
        {"--out": []},
        {"--checkpoint": lambda r: r / "run", "--data-dir": lambda r: r / "data"},
    ),
}
PLUGIN_COMMANDS = {"caption", "caption --score", "score", "finetune-caption"}
POSITIONAL_OUTPUTS = {"OUT_DIR"}


def _targets(path: Path) -> list[Path]:
    """The input itself and, for a folder, its first file (recursively) and a new file inside it;
    for a run directory its record files and a file in its checkpoint (new files beside them are allowed)."""
    if not path.is_dir():
        return [path]
    if (path / "metrics.jsonl").is_file():
        return [path, path / "metrics.jsonl", path / "train_config.json", path / "final" / "config.json",
                path / "final" / "new-output.json"]
    first = next(Path(d) / f for d, _, files in sorted(os.walk(path)) for f in sorted(files))
    return [path, first, path / "new-output.json"]


CASES = [
    pytest.param(command, option, label, id=f"{command}:{option}->{label}")
    for command, (_, outputs, inputs) in COMMANDS.items()
    for option in outputs
    for label in inputs
]


@pytest.mark.parametrize("command,option,label", CASES)
def test_no_output_option_overwrites_an_input(capsys, world, tmp_path, command, option, label):
    if command.split()[0] in {c.split()[0] for c in PLUGIN_COMMANDS} and importlib.util.find_spec("wenlan_aic_icc") is None:
        pytest.skip("the captioning plugin is not installed")
    base, outputs, inputs = COMMANDS[command]
    extra = [str(a).replace("{tmp}", str(tmp_path)) for a in outputs[option]]
    for target in _targets(inputs[label](world)):
        before = snapshot(world)
        placed = [target] if option in POSITIONAL_OUTPUTS else [option, target]
        code, _, err = run_cli(capsys, *base(world), *extra, *placed)
        assert code == 2, f"{command} {option} {target}: exit {code}: {err}"
        assert "Traceback" not in err and option in err and err.count("\n") == 1, err
        assert snapshot(world) == before, f"{command} {option} {target} changed its inputs"
