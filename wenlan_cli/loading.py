"""Load a trained BriVL for inference: no hub, no pickle (safetensors + JSON + tokenizer)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from .config import ModelConfig
from .data.pipeline import ImageSettings
from .errors import CheckpointError
from .models.registry import create_model
from .models.tokenizer import load_tokenizer
from .engine.checkpoint import load_query_state, model_config_of, read_checkpoint_info, resolve_checkpoint


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: object
    config: ModelConfig
    settings: ImageSettings
    path: Path
    info: dict


def load_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The query towers of a checkpoint (or a run directory's final / latest one)."""
    directory = resolve_checkpoint(path)
    config = model_config_of(directory)
    info = read_checkpoint_info(directory)
    tokenizer = load_tokenizer(directory)
    model = create_model(
        config, vocab_size=info.get("vocab_size"), for_training=False, language_config=info.get("text_model_config")
    )
    state = load_query_state(directory)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise CheckpointError(f"{directory / 'model.safetensors'} does not fit the architecture in config.json: {first}") from None
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / 'model.safetensors'} does not fit the architecture in config.json: "
            f"{len(missing)} missing keys (e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})."
        )
    for key, tensor in state.items():
        if not torch.isfinite(tensor).all() if tensor.is_floating_point() else False:
            raise CheckpointError(f"{directory / 'model.safetensors'} holds non-finite values in {key}.")
    model.to(device).eval()
    return LoadedModel(model, tokenizer, config, ImageSettings.from_config(config.image), directory, info)
