"""Helpers shared by the training benchmarks (vs_open_clip.py, queue_vs_inbatch.py).

Each wenlan run here goes through the real `Pretrainer.run()` (what `wenlan pretrain`
runs), with two benchmark-only changes that never touch the timed loop: the console is
silenced, and the end-of-run evaluation is skipped (`evaluate_checkpoint` evaluates the
checkpoint the run wrote instead, the same way for runs that finished and runs stopped by
`max_time`, which write a checkpoint without evaluating).
"""

from __future__ import annotations

import json
import statistics
import tempfile
from pathlib import Path

import torch

from wenlan_cli.config import TrainConfig
from wenlan_cli.data.sources import load_records
from wenlan_cli.train.loop import Pretrainer


def silent_console():
    from rich.console import Console

    return Console(stderr=True, quiet=True)


class NoEvalPretrainer(Pretrainer):
    """`Pretrainer` without its evaluation (the benchmark evaluates the checkpoint itself)."""

    def evaluate(self, *args, **kwargs):
        return None


def synth_options(train: int, val: int, test: int, seed: int = 0) -> dict:
    return dict(train=train, val=val, test=test, seed=seed)


def load_split(data_dir: str | None, split: str, synth: dict):
    """Records of the synthetic dataset (the cached one for `synth`, or `data_dir` read
    as AIC-ICC, which is the synthetic dataset's layout)."""
    return load_records("synth", data_dir, split, synth=synth)


def run_wenlan(work: Path, name: str, trainer_class: type = NoEvalPretrainer, **train_options) -> dict:
    """One `Pretrainer.run()` (by default `NoEvalPretrainer`'s) with the given TrainConfig
    options; returns the run's step count, checkpoint, whether it stopped early and its
    metrics.jsonl entries."""
    out = work / name
    cfg = TrainConfig(out=str(out), **train_options)
    result = trainer_class(cfg, console=silent_console()).run()
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text(encoding="utf-8").splitlines() if x.strip()]
    return {
        "out": out,
        "steps": result.step,
        "checkpoint": result.checkpoint,
        "stopped_early": result.stopped_early,
        "train_log": [x for x in lines if "loss" in x],
    }


def rate_from_log(train_log: list[dict], batch_size: int, after_step: int) -> dict:
    """Pairs/s between the logged step `after_step` (warm-up excluded) and the last logged
    step, from the loop's own `time` stamps (seconds since the loop started)."""
    by_step = {x["step"]: x for x in train_log}
    last = max(by_step)
    if after_step not in by_step or last <= after_step:
        raise RuntimeError(f"the log has no entries at step {after_step} and after; log steps: {sorted(by_step)[:5]}...")
    seconds = by_step[last]["time"] - by_step[after_step]["time"]
    return {
        "pairs_per_s": (last - after_step) * batch_size / seconds,
        "timed_steps": last - after_step,
        "timed_s": seconds,
        "loop_s": by_step[last]["time"],
        "final_loss": by_step[last]["loss"],
    }


def evaluate_checkpoint(path: Path, records, device: str = "cpu", with_stats: bool = False):
    """Val retrieval metrics of a wenlan checkpoint, as `wenlan eval-retrieval` computes them.

    With `with_stats`, returns (metrics, stats): the same steps as `evaluate_retrieval`
    (encode images, encode the query table's texts, `retrieval_metrics`), keeping the
    embeddings to measure how far they collapse onto one direction: the norm of the mean
    unit vector (0 for spread-out embeddings, 1 when all are the same vector)."""
    from wenlan_cli.encode import encode_images, encode_texts
    from wenlan_cli.eval.evaluate import evaluate_retrieval, query_table
    from wenlan_cli.eval.retrieval import retrieval_metrics
    from wenlan_cli.loading import load_checkpoint

    loaded = load_checkpoint(path, device=device)
    dev = torch.device(device)
    max_length = loaded.config.text.max_length
    if not with_stats:
        return evaluate_retrieval(loaded.model, loaded.tokenizer, records, loaded.settings, device=dev, max_length=max_length)
    images = encode_images(loaded.model, records, loaded.settings, device=dev, batch_size=128).embeddings
    texts, owners = query_table(records)
    text_emb = encode_texts(loaded.model, loaded.tokenizer, texts, device=dev, max_length=max_length, batch_size=256)
    metrics = retrieval_metrics(images, text_emb, owners)
    stats = {
        "image_mean_vector_norm": round(float(images.float().mean(0).norm()), 3),
        "text_mean_vector_norm": round(float(text_emb.float().mean(0).norm()), 3),
    }
    return metrics, stats


def queue_drift(path: Path, batch_size: int) -> dict | None:
    """For a moco checkpoint: mean cosine between the newest batch of queued keys and the
    newest batch itself / the oldest batch in the queue. Keys from a drifting encoder make
    the newest keys (like the positive key) recognisable by age rather than content."""
    from wenlan_cli.engine.checkpoint import load_training_state

    rest = load_training_state(path)["model_rest"]
    out = {}
    for name in ("image_queue", "text_queue"):
        if f"{name}.features" not in rest:
            return None
        queue = rest[f"{name}.features"]
        slots = queue.shape[0] // batch_size
        newest_slot = (int(rest[f"{name}.pointer"]) // batch_size - 1) % slots
        oldest_slot = (newest_slot + 1) % slots
        newest = queue[newest_slot * batch_size : (newest_slot + 1) * batch_size]
        oldest = queue[oldest_slot * batch_size : (oldest_slot + 1) * batch_size]
        out[name] = {
            "cos_newest_newest": round(float((newest @ newest.t()).mean()), 3),
            "cos_newest_oldest": round(float((newest @ oldest.t()).mean()), 3),
        }
    return out


def mean_std(values: list[float]) -> dict:
    return {
        "mean": round(statistics.fmean(values), 3),
        "std": round(statistics.stdev(values), 3) if len(values) > 1 else 0.0,
        "n": len(values),
    }


def moco_vs_clip(runs: list[dict], batch: int, seeds) -> dict:
    """moco minus clip mean recall paired by seed at one batch size, and who wins."""
    diffs = []
    for seed in seeds:
        pick = {r["loss"]: r["mean_recall"] for r in runs if r["batch_size"] == batch and r["seed"] == seed}
        diffs.append(pick["moco"] - pick["clip"])
    d = mean_std(diffs)
    return {"moco_minus_clip": d, "winner": "moco" if d["mean"] > 0 else "clip",
            "moco_wins_every_seed": all(x > 0 for x in diffs)}


def work_dir(keep: str | None, prefix: str):
    """A temporary directory (removed at exit) unless `keep` names one to keep."""
    if keep:
        path = Path(keep)
        path.mkdir(parents=True, exist_ok=True)

        class _Keep:
            def __enter__(self):
                return path

            def __exit__(self, *exc):
                return False

        return _Keep()

    class _Tmp:
        def __enter__(self):
            self._tmp = tempfile.TemporaryDirectory(prefix=prefix)
            return Path(self._tmp.name)

        def __exit__(self, *exc):
            self._tmp.cleanup()
            return False

    return _Tmp()


def short_metrics(metrics: dict) -> dict:
    keys = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "mean_recall")
    return {k: round(float(metrics[k]), 2) for k in keys if k in metrics}
