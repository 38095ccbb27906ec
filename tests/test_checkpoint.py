"""Checkpoint directories: contents, round trip, resolution, atomic writes, bad files."""

from __future__ import annotations

import json
import os
import pickle

import pytest
import torch

from wenlan_cli.errors import CheckpointError, TrainingError
from wenlan_cli.loading import load_checkpoint
from wenlan_cli.engine import checkpoint as ckpt
from wenlan_cli.engine.checkpoint import CheckpointContents, load_training_state, resolve_checkpoint, write_checkpoint


def test_final_checkpoint_holds_the_documented_files(tiny_run):
    final = tiny_run.out / "final"
    for name in ("config.json", "model.safetensors", "vocab.txt", "tokenizer_config.json", "training_state.pt", "metrics.jsonl"):
        assert (final / name).is_file(), name
    info = json.loads((final / "config.json").read_text())
    assert info["model"]["name"] == "brivl-tiny" and info["wenlan_version"] and info["step"] == 6
    lines = [json.loads(line) for line in (final / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in lines if "loss" in m] == [2, 4, 6]
    assert lines[-1]["split"] == "val" and 0 <= lines[-1]["mean_recall"] <= 100
    state = load_training_state(final)
    assert state["step"] == 6 and any(k.startswith("image_queue") for k in state["model_rest"])
    assert not list(tiny_run.out.glob(".tmp-*")) and not list(tiny_run.out.glob(".old-*"))


def test_loading_needs_no_pickle_and_round_trips_embeddings(tiny_run, tmp_path):
    loaded = load_checkpoint(tiny_run.out)  # a run directory resolves to its final checkpoint
    assert loaded.path == tiny_run.out / "final"
    assert not hasattr(loaded.model, "image_queue")  # inference needs no momentum towers
    s = loaded.settings.image_size
    images = torch.randn(2, 3, s, s)
    boxes = torch.tensor([0.0, 0.0, s, s]).repeat(2, loaded.settings.max_regions, 1)
    mask = torch.zeros(2, loaded.settings.max_regions, dtype=torch.bool)
    mask[:, 0] = True
    ids = loaded.tokenizer(["两个红色圆形", "蓝色"], padding=True, return_tensors="pt")
    first = loaded.model.encode_image(images, boxes, mask), loaded.model.encode_text(ids["input_ids"], ids["attention_mask"])
    # Save the loaded model again and load that copy: identical embeddings.
    copy_dir = write_checkpoint(tmp_path / "copy", CheckpointContents(
        model_config=loaded.config, query_state=loaded.model.query_state_dict(), tokenizer=loaded.tokenizer, info=loaded.info,
    ))
    again = load_checkpoint(copy_dir)
    second = again.model.encode_image(images, boxes, mask), again.model.encode_text(ids["input_ids"], ids["attention_mask"])
    assert torch.equal(first[0], second[0]) and torch.equal(first[1], second[1])


def test_run_directory_without_final_resolves_to_the_latest_step(tiny_run, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    for step in (5, 12):
        (run / ckpt.step_name(step)).symlink_to(tiny_run.out / "final", target_is_directory=True)
    assert resolve_checkpoint(run) == run / ckpt.step_name(12)
    with pytest.raises(CheckpointError, match="neither a checkpoint"):
        resolve_checkpoint(tmp_path)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_checkpoint(tmp_path / "missing")


def _copy_checkpoint(src, dst):
    import shutil

    shutil.copytree(src, dst)
    return dst


def test_truncated_weights_give_a_clear_error(tiny_run, tmp_path):
    broken = _copy_checkpoint(tiny_run.out / "final", tmp_path / "broken")
    data = (broken / "model.safetensors").read_bytes()
    (broken / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated or not a safetensors file"):
        load_checkpoint(broken)


def test_weights_of_another_architecture_are_refused(tiny_run, tmp_path):
    other = _copy_checkpoint(tiny_run.out / "final", tmp_path / "other")
    info = json.loads((other / "config.json").read_text())
    info["model"]["image"]["region_dim"] = 64
    (other / "config.json").write_text(json.dumps(info))
    with pytest.raises(CheckpointError):
        load_checkpoint(other)


class _Exploit:
    def __reduce__(self):
        return (os.system, ("echo pwned > /tmp/wenlan-pwned",))


def test_a_tampered_training_state_is_refused_without_running_code(tiny_run, tmp_path):
    tampered = _copy_checkpoint(tiny_run.out / "final", tmp_path / "tampered")
    with open(tampered / "training_state.pt", "wb") as handle:
        pickle.dump({"step": _Exploit()}, handle)
    with pytest.raises(CheckpointError, match="tampered"):
        load_training_state(tampered)
    assert not os.path.exists("/tmp/wenlan-pwned")


def test_a_failed_write_leaves_the_previous_checkpoint_whole(tiny_run, tmp_path, monkeypatch):
    run = tmp_path / "run"
    previous = _copy_checkpoint(tiny_run.out / "final", run / ckpt.step_name(6))
    before = {p.name: p.read_bytes() for p in previous.iterdir()}
    loaded = load_checkpoint(previous)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    contents = CheckpointContents(
        model_config=loaded.config, query_state=loaded.model.query_state_dict(), tokenizer=loaded.tokenizer,
        info=loaded.info, training_state={"step": 8},
    )
    with pytest.raises(TrainingError, match=r"No space left on device.*previous checkpoint .*step-00000006 is intact"):
        write_checkpoint(run / ckpt.step_name(8), contents)
    assert not (run / ckpt.step_name(8)).exists()
    assert not list(run.glob(".tmp-*"))
    assert {p.name: p.read_bytes() for p in previous.iterdir()} == before


def test_overwriting_a_checkpoint_replaces_it_atomically(tiny_run, tmp_path):
    loaded = load_checkpoint(tiny_run.out)
    contents = CheckpointContents(
        model_config=loaded.config, query_state=loaded.model.query_state_dict(), tokenizer=loaded.tokenizer, info={"step": 1},
    )
    target = write_checkpoint(tmp_path / "final", contents)
    contents.info = {"step": 2}
    write_checkpoint(target, contents)
    assert json.loads((target / "config.json").read_text())["step"] == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["final"]


def test_adamw_uses_the_fused_kernel_for_float32_and_falls_back_otherwise():
    from wenlan_cli.engine.optim import adamw

    single = torch.nn.Parameter(torch.ones(3))
    optimizer = adamw([{"params": [single], "weight_decay": 0.0}], 0.1)
    assert optimizer.defaults["fused"] is True
    double = torch.nn.Parameter(torch.ones(3, dtype=torch.float64))
    assert not adamw([{"params": [double], "weight_decay": 0.0}], 0.1).defaults["fused"]
    # The fused kernel takes the same step as the reference loop.
    reference = torch.nn.Parameter(torch.ones(3))
    loop = torch.optim.AdamW([reference], lr=0.1, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.0, foreach=False)
    for p, opt in ((single, optimizer), (reference, loop)):
        p.grad = torch.tensor([1.0, -2.0, 0.5])
        opt.step()
    torch.testing.assert_close(single.detach(), reference.detach())
