"""States are never called good when they are not (issue 14, section 4): no checkpoint
with a NaN or infinity, a guard on the parameters and the learning rate as well as the
loss, strict JSON metrics, and resumes that refuse conflicting options."""

from __future__ import annotations

import json

import pytest
import torch

from wenlan_cli.cli import main
from wenlan_cli.config import ModelConfig
from wenlan_cli.errors import TrainingError
from wenlan_cli.engine import checkpoint as ckpt
from wenlan_cli.engine.stops import non_finite_state
from wenlan_cli.train.loop import Pretrainer


def run_cli(capsys, *args):
    code = main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def strict_loads(line: str):
    def refuse(name):
        raise ValueError(f"{name} is not JSON")

    return json.loads(line, parse_constant=refuse)


def test_a_checkpoint_holding_a_non_finite_value_is_never_written(tmp_path):
    good = {"a": torch.ones(3)}
    for query, rest, bad in [
        ({"w": torch.tensor([1.0, float("inf")])}, {}, "w"),
        (good, {"model_rest": {"queue": torch.tensor([float("nan")])}}, "training_state.model_rest.queue"),
        (good, {"optimizer": {"state": {0: {"exp_avg": torch.tensor([float("nan")])}}}}, "training_state.optimizer.state.0.exp_avg"),
    ]:
        contents = ckpt.CheckpointContents(ModelConfig(), query, tokenizer=None, info={}, training_state=rest)
        with pytest.raises(TrainingError, match=f"refusing to write checkpoint .*: {bad} holds NaN or infinite values"):
            ckpt.write_checkpoint(tmp_path / "step-00000001", contents)
        assert not (tmp_path / "step-00000001").exists() and not list(tmp_path.iterdir())


def test_the_guard_checks_the_learning_rate_and_the_parameters_not_only_the_loss():
    model = torch.nn.Linear(2, 2)
    assert non_finite_state(1.0, 1e-3, model) is None
    assert non_finite_state(float("nan"), 1e-3, model) == "the loss became nan"
    assert non_finite_state(1.0, float("inf"), model) == "the learning rate became inf"
    with torch.no_grad():
        model.bias[1] = float("-inf")
    assert non_finite_state(1.0, 1e-3, model) == "the parameter bias became non-finite"
    assert non_finite_state(1.0, 1e-3, None) is None  # steps between checks look at loss and lr only


def test_a_parameter_gone_infinite_stops_the_run_before_it_is_saved(synth_dir, tmp_path, tiny_config, monkeypatch):
    real_step = Pretrainer.train_step
    calls = {"n": 0}

    def poisoned(self, *args, **kwargs):
        result = real_step(self, *args, **kwargs)
        calls["n"] += 1
        if calls["n"] == 2:  # the loss of step 2 was finite; the update made a weight infinite
            with torch.no_grad():
                next(self.model.image_encoder.head.mlp.parameters())[0, 0] = float("inf")
        return result

    monkeypatch.setattr(Pretrainer, "train_step", poisoned)
    run = tmp_path / "run"
    cfg = tiny_config(run, synth_dir, steps=4, save_every=1, log_every=5, batch_size=8, queue_size=32)
    with pytest.raises(TrainingError) as caught:
        Pretrainer(cfg).run()
    message = str(caught.value)
    assert message.startswith("the parameter image_encoder.head.mlp.0.weight became non-finite at step 2;"), message
    assert "step-00000001" in message and "good" not in message
    assert [step for step, _ in ckpt.step_checkpoints(run)] == [1]
    for line in (run / "metrics.jsonl").read_text().splitlines():
        strict_loads(line)


def test_metrics_are_strict_json_with_null_for_non_finite_values(synth_dir, tmp_path, tiny_config):
    from wenlan_cli.engine.distributed import DistContext

    trainer = Pretrainer(tiny_config(tmp_path, synth_dir), ctx=DistContext())
    trainer.record({"step": 1, "loss": 2.5, "lr": float("inf"), "extra": [float("nan"), 1.0]})
    line = (tmp_path / "metrics.jsonl").read_text()
    assert "Infinity" not in line and "NaN" not in line
    assert strict_loads(line) == {"step": 1, "loss": 2.5, "lr": None, "extra": [None, 1.0]}


# Resuming -----------------------------------------------------------------------------

def test_resume_with_steps_not_beyond_the_checkpoint_is_refused(capsys, tiny_run, tmp_path):
    code, _, err = run_cli(capsys, "pretrain", "--resume", tiny_run.out / "final", "--out", tmp_path / "new", "--steps", 2)
    assert code == 2
    assert err == (f"error: --steps 2 is not beyond the checkpoint's step 6; give --steps above 6 to train further "
                   "(--steps counts from the start of the run).\n")
    code, _, err = run_cli(capsys, "pretrain", "--resume", tiny_run.out / "final", "--out", tmp_path / "new2")
    assert code == 2 and "is at step 6, the end of a 6-step run; give --steps above 6" in err


def test_resume_with_options_that_conflict_with_the_checkpoint_names_them(capsys, tiny_run, tmp_path):
    code, _, err = run_cli(
        capsys, "pretrain", "--resume", tiny_run.out / "final", "--out", tmp_path / "new", "--steps", 9,
        "--queue-size", 128, "--batch-size", 32, "--lr", 0.5,
    )
    assert code == 2, err
    assert "--queue-size 128 (the checkpoint's run used 64)" in err
    assert "--batch-size 32 (the checkpoint's run used 16)" in err
    assert "--lr 0.5 (the checkpoint's run used 0.001)" in err
    assert err.count("\n") == 1 and "leave these options out" in err


def test_resume_applies_and_announces_steps_beyond_the_checkpoint(capsys, tiny_run, tmp_path):
    new = tmp_path / "new"
    # Only --steps is given: the data, batch, queue... come from the checkpoint's run.
    code, _, err = run_cli(capsys, "pretrain", "--resume", tiny_run.out / "final", "--out", new, "--steps", 8, "--workers", 0)
    assert code == 0, err
    assert "--steps 8 (was 6)" in err and "at step 6" in err
    steps = [strict_loads(line)["step"] for line in (new / "metrics.jsonl").read_text().splitlines()]
    losses = [s for s, line in zip(steps, (new / "metrics.jsonl").read_text().splitlines()) if "loss" in line]
    assert losses == sorted(set(losses)) and losses[-1] == 8  # no step twice
    saved = json.loads((new / "train_config.json").read_text())
    assert saved["steps"] == 8 and saved["batch_size"] == 16 and saved["queue_size"] == 64


def test_resume_auto_in_an_empty_folder_says_it_starts_a_new_run(capsys, synth_dir, tmp_path):
    out = tmp_path / "empty"
    out.mkdir()
    code, _, err = run_cli(
        capsys, "pretrain", "--resume", "auto", "--out", out, "--data-dir", synth_dir, "--steps", 2, "--batch-size", 16,
        "--queue-size", 64, "--workers", 0,
    )
    assert code == 0, err
    assert f"No checkpoint in {out} to resume from; starting a new run." in " ".join(err.split())
