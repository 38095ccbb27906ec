"""The Trainer skeleton (wenlan_cli/engine/trainer.py) on a toy trainer: a linear model on
a fixed stream of batches. The loop calls the hooks in order, the run state survives a
checkpoint bit for bit, a --max-time stop writes a whole checkpoint that a resume
continues exactly, and a NaN loss stops the run with the guard's sentence."""

from __future__ import annotations

import io
from dataclasses import dataclass

import pytest
import torch
import torch.nn.functional as F
from rich.console import Console

from wenlan_cli.config import ModelConfig
from wenlan_cli.engine.budget import CAPTION_RULE, build_plan
from wenlan_cli.engine.checkpoint import CheckpointContents, load_query_state, load_training_state, step_checkpoints
from wenlan_cli.engine.optim import make_optimizer
from wenlan_cli.engine.trainer import Trainer
from wenlan_cli.errors import TrainingError
from wenlan_cli.models.tokenizer import build_char_vocab, tokenizer_from_vocab


@dataclass
class ToyConfig:
    out: str
    steps: int = 4
    log_every: int = 2
    eval_every: int = 2
    save_every: int = 0
    max_time: float | None = None
    resume: str | None = None


class Toy(Trainer):
    label, unit, rate_key = "toy", "rows/s", "rows_per_s"

    def __init__(self, cfg: ToyConfig, poison_at: int | None = None) -> None:
        super().__init__(cfg, console=Console(file=io.StringIO(), width=200))
        self.calls: list[str] = []
        self.poison_at = poison_at  # the step whose loss becomes NaN

    def build(self) -> None:
        self.calls.append("build")
        self.out.mkdir(parents=True, exist_ok=True)
        torch.manual_seed(0)
        self.model = torch.nn.Linear(3, 1)
        self.state.schedule(make_optimizer([(self.model, 0.1)], lr=0.1, weight_decay=0.01), self.make_plan(4))
        directory = self.find_resume(self.cfg.resume)
        if directory is not None:
            self.resume(directory, keep_plan=True)

    def make_plan(self, batches_per_epoch, *, total=None, seconds_per_step=None):
        return build_plan(CAPTION_RULE, batches_per_epoch=batches_per_epoch, steps=self.cfg.steps, warmup=1)

    def batches(self):
        self.calls.append("batches")
        g = torch.Generator().manual_seed(1)
        for index in range(10**6):
            x = torch.randn(8, 3, generator=g)
            if index >= self.state.data_position:
                yield x, x.sum(1, keepdim=True)

    def train_step(self, batches):
        x, y = next(batches)
        self.calls.append(f"step {self.state.step + 1}")
        loss = F.mse_loss(self.model(x), y)
        if self.poison_at == self.state.step + 1:
            loss = loss * float("nan")
        loss.backward()
        self.state.optimizer.step()
        self.state.optimizer.zero_grad()
        return float(loss.detach()), 8

    def save_every(self):
        return self.cfg.save_every

    def evaluate(self, step):
        self.calls.append(f"evaluate {step}")
        return {"step": step}

    def checkpoint_contents(self, final_metrics=None):
        return CheckpointContents(
            model_config=ModelConfig(), query_state=dict(self.model.state_dict()),
            tokenizer=tokenizer_from_vocab(build_char_vocab(["图文"])), info={"step": self.state.step},
            training_state=self.state.state_dict(), metrics_lines=list(self.metrics_lines),
        )

    def load_model_state(self, directory, saved):
        self.model.load_state_dict(load_query_state(directory))

    def finish(self, stopped):
        self.calls.append("finish")
        if stopped is not None:
            return self.save_on_stop(stopped)
        return self.save_checkpoint("final")


def test_the_loop_calls_the_hooks_in_order_and_logs_each_logged_step(tmp_path):
    toy = Toy(ToyConfig(out=str(tmp_path / "run")))
    toy.run()
    assert toy.calls == ["build", "batches", "step 1", "step 2", "evaluate 2", "step 3", "step 4", "finish"]
    import json

    lines = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [2, 4]
    assert set(lines[0]) == {"step", "loss", "lr", "rows_per_s", "skipped_images", "time"}
    # warm-up 1 step then cosine to the floor: the lr after step 4 is the floor (1% of 0.1).
    assert lines[1]["lr"] == pytest.approx(0.001)


def test_the_run_state_round_trips_through_a_checkpoint_bitwise(tmp_path):
    toy = Toy(ToyConfig(out=str(tmp_path / "run"), steps=3))
    toy.run()
    saved = load_training_state(tmp_path / "run" / "final")
    assert set(saved) == {"step", "optimizer", "scheduler", "rng", "skipped_images", "plan"}
    torch.manual_seed(123)
    expected = torch.rand(4)  # what the global generator gives after the state is captured
    torch.manual_seed(123)
    again = toy.state.state_dict()
    other = Toy(ToyConfig(out=str(tmp_path / "other"), steps=3))
    other.build()
    torch.manual_seed(7)  # moved on: the restore must put it back
    other.state.load_state_dict(again, keep_plan=True)
    assert torch.equal(torch.rand(4), expected)
    assert other.state.step == 3 and other.plan == toy.plan and other.state.resumed
    assert other.state.scheduler.state_dict() == toy.state.scheduler.state_dict()
    mine, theirs = toy.state.optimizer.state_dict(), other.state.optimizer.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    for index, values in mine["state"].items():
        for key, value in values.items():
            assert torch.equal(value, theirs["state"][index][key]), (index, key)


def test_a_max_time_stop_writes_a_whole_checkpoint_that_a_resume_continues_exactly(tmp_path):
    whole = Toy(ToyConfig(out=str(tmp_path / "whole")))
    whole.run()
    stopped = Toy(ToyConfig(out=str(tmp_path / "cut"), max_time=0.0))
    path = stopped.run()
    assert stopped.calls[-2:] == ["step 1", "finish"] and path == tmp_path / "cut" / "step-00000001"
    assert {"config.json", "model.safetensors", "training_state.pt", "metrics.jsonl"} <= {p.name for p in path.iterdir()}
    assert load_training_state(path)["step"] == 1
    resumed = Toy(ToyConfig(out=str(tmp_path / "cut"), resume="auto"))
    resumed.run()
    assert resumed.calls == ["build", "batches", "step 2", "evaluate 2", "step 3", "step 4", "finish"]
    final, reference = load_query_state(tmp_path / "cut" / "final"), load_query_state(tmp_path / "whole" / "final")
    assert final.keys() == reference.keys() and all(torch.equal(final[k], reference[k]) for k in final)


def test_a_nan_loss_stops_the_run_with_the_guards_sentence(tmp_path):
    run = tmp_path / "run"
    with pytest.raises(TrainingError) as caught:
        Toy(ToyConfig(out=str(run), save_every=1), poison_at=3).run()
    assert str(caught.value) == (
        f"the loss became nan at step 3; training stopped. The newest checkpoint, {run / 'step-00000002'}, "
        "was written before and holds only finite values."
    )
    assert [step for step, _ in step_checkpoints(run)] == [1, 2]
    with pytest.raises(TrainingError, match=r"^the loss became nan at step 1; training stopped and no checkpoint had been written yet\.$"):
        Toy(ToyConfig(out=str(tmp_path / "early")), poison_at=1).run()


def _decayed(model, optimizer) -> tuple[set[str], set[str]]:
    names = {id(p): n for n, p in model.named_parameters()}
    groups = optimizer.param_groups
    return ({names[id(p)] for g in groups if g["weight_decay"] > 0 for p in g["params"]},
            {names[id(p)] for g in groups if g["weight_decay"] == 0 for p in g["params"]})


def test_pretraining_decays_the_parameters_it_always_did():
    """engine/optim.py make_optimizer with pretraining's marker: weight matrices decayed
    except the text tower's embedding tables; the image tower's box projection decayed."""
    from wenlan_cli.config import TrainConfig
    from wenlan_cli.engine.distributed import DistContext
    from wenlan_cli.models.registry import create_model, get_model_config
    from wenlan_cli.train.loop import Pretrainer

    model = create_model(get_model_config("brivl-tiny"), vocab_size=50, pretrained=False)
    optimizer = Pretrainer(TrainConfig(batch_size=4, weight_decay=0.05), ctx=DistContext()).make_optimizer(model)
    decayed, kept = _decayed(model, optimizer)
    trainable = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    assert decayed == {n for n, p in trainable if p.ndim >= 2 and "embeddings" not in n}  # the rule before engine/optim.py
    assert kept == {n for n, _ in trainable} - decayed
    assert "image_encoder.box_embed.weight" in decayed
    assert "text_encoder.language_model.embeddings.word_embeddings.weight" in kept
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.05, 0.0]
