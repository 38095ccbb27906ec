"""Checkpoint directories, written atomically.

A checkpoint is `config.json`, `model.safetensors` (the query towers), the tokenizer
files, `training_state.pt` (everything else a resume needs) and `metrics.jsonl`. It is
written under a temporary name and renamed into place, so a crash or a full disk never
leaves a half-written checkpoint where a resume or an evaluation would find it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch

from .. import __version__, strict_json
from ..config import ModelConfig, from_dict, to_dict
from ..errors import CheckpointError, TrainingError
from ..models.tokenizer import save_tokenizer

STEP_PATTERN = re.compile(r"^step-(\d+)$")
REQUIRED_FILES = ("config.json", "model.safetensors")


def step_name(step: int) -> str:
    return f"step-{step:08d}"


def is_checkpoint(path: Path) -> bool:
    return all((path / name).is_file() for name in REQUIRED_FILES)


def step_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """The run's `step-N` checkpoints, oldest first."""
    found = []
    if run_dir.is_dir():
        for child in run_dir.iterdir():
            match = STEP_PATTERN.match(child.name)
            if match and is_checkpoint(child):
                found.append((int(match.group(1)), child))
    return sorted(found)


def latest_checkpoint(run_dir: Path) -> Path | None:
    """The newest resumable checkpoint in a run directory (a step or the final one)."""
    candidates = [(step, path) for step, path in step_checkpoints(run_dir)]
    final = run_dir / "final"
    if is_checkpoint(final) and (final / "training_state.pt").is_file():
        candidates.append((read_checkpoint_info(final).get("step", -1), final))
    return max(candidates, key=lambda item: item[0])[1] if candidates else None


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint directory, or a run directory whose final (else latest) checkpoint."""
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist.")
    if is_checkpoint(path):
        return path
    if is_checkpoint(path / "final"):
        return path / "final"
    steps = step_checkpoints(path)
    if steps:
        return steps[-1][1]
    raise CheckpointError(
        f"{path} is neither a checkpoint (config.json + model.safetensors) nor a run directory holding one."
    )


def read_checkpoint_info(path: Path) -> dict:
    try:
        info = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CheckpointError(f"{path} has no config.json.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path / 'config.json'} is not valid JSON ({exc}).") from None
    if not isinstance(info, dict) or not isinstance(info.get("model"), dict):
        raise CheckpointError(f"{path / 'config.json'} has no 'model' section.")
    return info


def model_config_of(path: Path) -> ModelConfig:
    info = read_checkpoint_info(path)
    try:
        config = from_dict(ModelConfig, info["model"], where="model")
        config.validate()
    except Exception as exc:
        raise CheckpointError(f"{path / 'config.json'}: {exc}") from None
    return config


@dataclass
class CheckpointContents:
    model_config: ModelConfig
    query_state: dict[str, torch.Tensor]
    tokenizer: object
    info: dict
    training_state: dict | None = None
    metrics_lines: list[str] | None = None


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def first_non_finite(state, where: str = "") -> str | None:
    """The name of the first floating-point tensor (at any depth of dicts and lists) holding
    NaN or an infinity, else None: a checkpoint is written only when every value is finite."""
    if isinstance(state, torch.Tensor):
        bad = state.is_floating_point() and not bool(torch.isfinite(state).all())
        return (where or "a tensor") if bad else None
    if isinstance(state, dict):
        items = state.items()
    elif isinstance(state, (list, tuple)):
        items = enumerate(state)
    else:
        return None
    for key, value in items:
        found = first_non_finite(value, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None


def write_checkpoint(target: Path, contents: CheckpointContents) -> Path:
    """Write `contents` to `target` atomically; on failure the previous checkpoint at
    `target` (if any) and every other checkpoint are left untouched."""
    from safetensors.torch import save_file

    target = Path(target)
    bad = first_non_finite(contents.query_state) or first_non_finite(contents.training_state or {}, "training_state")
    if bad is not None:
        raise TrainingError(f"refusing to write checkpoint {target}: {bad} holds NaN or infinite values.")
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    tmp = parent / f".tmp-{target.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir()
        info = dict(contents.info)
        info["model"] = to_dict(contents.model_config)
        info["wenlan_version"] = __version__
        (tmp / "config.json").write_text(strict_json.dumps(info, ensure_ascii=False, indent=2), encoding="utf-8")
        state = {k: v.detach().contiguous().cpu() for k, v in contents.query_state.items()}
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt", "wenlan_version": __version__})
        save_tokenizer(contents.tokenizer, tmp)
        if contents.training_state is not None:
            torch.save(contents.training_state, tmp / "training_state.pt")
        if contents.metrics_lines is not None:
            (tmp / "metrics.jsonl").write_text("".join(contents.metrics_lines), encoding="utf-8")
        for child in tmp.iterdir():
            with open(child, "rb") as handle:
                os.fsync(handle.fileno())
        _fsync_dir(tmp)
        old = parent / f".old-{target.name}-{os.getpid()}"
        if target.exists():
            target.rename(old)
        tmp.rename(target)
        _fsync_dir(parent)
        shutil.rmtree(old, ignore_errors=True)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(parent)
        kept = f"; the previous checkpoint {previous} is intact" if previous else ""
        raise TrainingError(f"could not write checkpoint {target} ({exc.strerror or exc}){kept}.") from None
    return target


def prune_checkpoints(run_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` step checkpoints."""
    for _, path in step_checkpoints(run_dir)[:-keep] if keep > 0 else []:
        shutil.rmtree(path, ignore_errors=True)


def load_query_state(path: Path) -> dict[str, torch.Tensor]:
    """model.safetensors: plain tensors, no code executed."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / "model.safetensors"
    try:
        return load_file(str(file))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{file} is truncated or not a safetensors file ({exc}).") from None


def load_training_state(path: Path) -> dict:
    """training_state.pt, read with weights_only=True so a tampered file cannot run code."""
    file = path / "training_state.pt"
    if not file.is_file():
        raise CheckpointError(f"{path} has no training_state.pt, so it cannot be resumed.")
    import pickle
    import warnings

    try:
        with warnings.catch_warnings():  # torch's own advice would be noise here
            warnings.simplefilter("ignore")
            return torch.load(file, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # torch's message suggests weights_only=False, which would run the file's code.
        found = re.search(r"GLOBAL ([\w.]+)", str(exc))
        what = f" ({found.group(1)})" if found else ""
        raise CheckpointError(
            f"{file} holds Python objects{what} besides tensors and plain values; it was not written by "
            "wenlan or was tampered with, and it is never loaded."
        ) from None
    except Exception:  # zip and stream errors all mean the same to the user
        raise CheckpointError(f"{file} is truncated or not a training state written by wenlan.") from None
