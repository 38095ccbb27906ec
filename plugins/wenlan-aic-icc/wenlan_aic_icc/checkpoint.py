"""Caption checkpoints: a directory like wenlan's own, written atomically by its writer.

`config.json` holds `"kind": "wenlan-caption"`, the decoder (`"head"`), the image tower's
architecture (`"model"`, wenlan's ModelConfig), the pretrain checkpoint it started from,
the decoding options it was validated with and its validation scores;
`model.safetensors` holds the tower (`image_encoder.*`) and the decoder (`head.*`);
the tokenizer files and `metrics.jsonl` sit beside them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import torch

from wenlan_cli.plugin_api import CheckpointError, from_dict, ImageSettings, ModelConfig

from . import __version__
from .decoding import DecodeOptions
from .model import CaptionModel, HeadConfig

KIND = "wenlan-caption"
# Inside a fine-tuning run directory, in the order `--checkpoint RUN_DIR` looks for them.
RUN_CHECKPOINTS = ("best", "final")


@dataclass
class LoadedCaptioner:
    model: CaptionModel
    tokenizer: object
    model_config: ModelConfig
    settings: ImageSettings
    decode: DecodeOptions
    path: Path
    info: dict


def _tied_key(model: CaptionModel) -> str | None:
    return "head.output.weight" if model.head_config.tie_embeddings else None


def save_caption_checkpoint(
    target: Path,
    model: CaptionModel,
    tokenizer,
    model_config: ModelConfig,
    info: dict,
    metrics_lines: list[str] | None = None,
) -> Path:
    """Write a caption checkpoint to `target` (temporary name + rename, as wenlan's own)."""
    from wenlan_cli.plugin_api import CheckpointContents, write_checkpoint

    tied = _tied_key(model)
    state = {k: v for k, v in model.state_dict().items() if k != tied}
    full_info = {
        "kind": KIND,
        "head": dataclasses.asdict(model.head_config),
        "plugin_version": __version__,
        **info,
    }
    return write_checkpoint(
        Path(target),
        CheckpointContents(
            model_config=model_config,
            query_state=state,
            tokenizer=tokenizer,
            info=full_info,
            metrics_lines=metrics_lines,
        ),
    )


def resolve_caption_checkpoint(path: str | Path) -> Path:
    """A caption checkpoint directory, or a fine-tuning run directory (its best, else final)."""
    from wenlan_cli.plugin_api import is_checkpoint

    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"caption checkpoint {path} does not exist.")
    if is_checkpoint(path):
        return path
    for name in RUN_CHECKPOINTS:
        if is_checkpoint(path / name):
            return path / name
    raise CheckpointError(
        f"{path} is neither a caption checkpoint (config.json + model.safetensors) nor a "
        "finetune-caption run directory holding best/ or final/."
    )


def load_caption_checkpoint(path: str | Path, device: str | torch.device = "cpu") -> LoadedCaptioner:
    """The captioner saved by `wenlan finetune-caption` (no pickle, no hub)."""
    from wenlan_cli.plugin_api import ImageEncoder, load_query_state, load_tokenizer, model_config_of, read_checkpoint_info

    directory = resolve_caption_checkpoint(path)
    info = read_checkpoint_info(directory)
    if info.get("kind") != KIND:
        raise CheckpointError(
            f"{directory} is not a caption checkpoint (it has no decoder; a pretrain checkpoint?); "
            "make one with: wenlan finetune-caption --checkpoint PRETRAIN_DIR --out DIR."
        )
    config = model_config_of(directory)
    try:
        head = from_dict(HeadConfig, dict(info.get("head") or {}), where="head")
        head.validate()
        decode = from_dict(DecodeOptions, dict(info.get("decode") or {}), where="decode")
    except Exception as exc:
        raise CheckpointError(f"{directory / 'config.json'}: {exc}") from None
    tokenizer = load_tokenizer(directory)
    if len(tokenizer) != head.vocab_size:
        raise CheckpointError(
            f"{directory}: the tokenizer has {len(tokenizer)} tokens but the decoder was built for {head.vocab_size}."
        )
    tower = ImageEncoder(config.image, config.embed_dim, pretrained=False)
    model = CaptionModel(tower, head)
    state = load_query_state(directory)
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        first = next((line.strip() for line in str(exc).splitlines() if "size mismatch" in line), str(exc))
        raise CheckpointError(f"{directory / 'model.safetensors'} does not fit config.json: {first}") from None
    missing = [k for k in missing if k != _tied_key(model)]
    if missing or unexpected:
        raise CheckpointError(
            f"{directory / 'model.safetensors'} does not fit config.json: {len(missing)} missing keys "
            f"(e.g. {sorted(missing)[:3]}), {len(unexpected)} unexpected (e.g. {sorted(unexpected)[:3]})."
        )
    for key, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{directory / 'model.safetensors'} holds non-finite values in {key}.")
    model.to(device).eval()
    return LoadedCaptioner(model, tokenizer, config, ImageSettings.from_config(config.image), decode, directory, info)
