"""Convert the released BriVL-1.0 checkpoint into a wenlan checkpoint directory.

The released file holds `torch.load(path)["learnable"]`: the state dict of the model's
`learnable` module dict, with keys under `imgencoder.*` and `textencoder.*` (and their
momentum twins `*_mom.*`, not needed for inference). Each encoder has a `backbone.*` part
(the timm CNN; `bert.*` inside the text backbone) and a `learnable.*` part: the region /
token Transformer (`imgAtt` / `textAtt`), the two-layer MLP (`imgFC` / `textFC`: `fc1`,
`fc2`) and, for images, the 1x1 convolution applied to grid-sampled regions
(`max_pool.0`). The converted model uses BriVL's own grid pooling and text padding so
that it reproduces the released embeddings.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig
from ..errors import CheckpointError, UsageError

# Keys that the released file carries but inference never uses.
IGNORED = [
    re.compile(r"^(imgencoder|textencoder)_mom\."),
    re.compile(r"^imgencoder\.backbone\.classifier\."),
    re.compile(r"^textencoder\.backbone\.bert\.pooler\."),
    re.compile(r"^textencoder\.backbone\.bert\.embeddings\.position_ids$"),
]

RULES = [
    (re.compile(r"^imgencoder\.backbone\.(.+)$"), r"image_encoder.backbone.\1"),
    (re.compile(r"^imgencoder\.learnable\.imgAtt\.(.+)$"), r"image_encoder.head.encoder.\1"),
    (re.compile(r"^imgencoder\.learnable\.imgFC\.fc1\.(weight|bias)$"), r"image_encoder.head.mlp.0.\1"),
    (re.compile(r"^imgencoder\.learnable\.imgFC\.fc2\.(weight|bias)$"), r"image_encoder.head.mlp.2.\1"),
    (re.compile(r"^imgencoder\.learnable\.max_pool\.0\.(weight|bias)$"), r"image_encoder.region_proj.\1"),
    (re.compile(r"^textencoder\.backbone\.bert\.(.+)$"), r"text_encoder.language_model.\1"),
    (re.compile(r"^textencoder\.learnable\.textAtt\.(.+)$"), r"text_encoder.head.encoder.\1"),
    (re.compile(r"^textencoder\.learnable\.textFC\.fc1\.(weight|bias)$"), r"text_encoder.head.mlp.0.\1"),
    (re.compile(r"^textencoder\.learnable\.textFC\.fc2\.(weight|bias)$"), r"text_encoder.head.mlp.2.\1"),
]


@dataclass
class Conversion:
    state: dict[str, torch.Tensor]
    ignored: list[str] = field(default_factory=list)


def read_released_state(path: str | Path) -> dict[str, torch.Tensor]:
    """`["learnable"]` of the released file, read without executing pickled code."""
    path = Path(path)
    if not path.is_file():
        raise UsageError(f"{path} does not exist.")
    try:
        blob = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"{path} is not a readable PyTorch checkpoint of tensors ({type(exc).__name__}: {exc}).") from None
    if isinstance(blob, dict) and "learnable" in blob:
        blob = blob["learnable"]
    if not isinstance(blob, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in blob.items()):
        raise CheckpointError(f"{path} holds no state dict under 'learnable' (the released BriVL layout).")
    # A checkpoint saved from DataParallel / DDP prefixes every key with "module.".
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in blob.items()}


def map_released_keys(released: dict[str, torch.Tensor]) -> Conversion:
    """Rename the released keys to wenlan's; anything unknown is an error naming it."""
    out: dict[str, torch.Tensor] = {}
    ignored, unknown = [], []
    for key, value in released.items():
        if any(p.search(key) for p in IGNORED):
            ignored.append(key)
            continue
        for pattern, replacement in RULES:
            if pattern.match(key):
                new = pattern.sub(replacement, key)
                if new == "image_encoder.region_proj.weight" and value.ndim == 4:
                    value = value[:, :, 0, 0]  # the 1x1 convolution is a linear map
                out[new] = value
                break
        else:
            unknown.append(key)
    if unknown:
        shown = ", ".join(unknown[:5])
        raise CheckpointError(f"{len(unknown)} key(s) are not part of the released BriVL layout: {shown}{' ...' if len(unknown) > 5 else ''}.")
    return Conversion(state=out, ignored=ignored)


def released_model_config(base: ModelConfig, image_size: int | None = None) -> ModelConfig:
    """The config that reproduces the released model: BriVL's grid pooling, BERT seeing
    the padding, a classifier-free backbone of the same architecture."""
    image = dataclasses.replace(base.image, region_pooling="grid", box_embedding=False, trainable_blocks=None)
    if image_size is not None:
        image = dataclasses.replace(image, image_size=image_size)
    text = dataclasses.replace(base.text, language_model_sees_padding=True, trainable_layers=None)
    return dataclasses.replace(base, image=image, text=text, name=f"{base.name}-released")


def check_against(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Every query-tower tensor present with the right shape, nothing extra."""
    expected = model.query_state_dict()
    missing = sorted(k for k in expected if k not in state and not k.endswith("num_batches_tracked"))
    extra = sorted(k for k in state if k not in expected)
    shape = [f"{k} {tuple(state[k].shape)} != {tuple(v.shape)}" for k, v in expected.items() if k in state and state[k].shape != v.shape]
    problems = []
    if missing:
        problems.append(f"missing {len(missing)} (e.g. {', '.join(missing[:3])})")
    if extra:
        problems.append(f"unexpected {len(extra)} (e.g. {', '.join(extra[:3])})")
    if shape:
        problems.append(f"shape mismatches {len(shape)} (e.g. {shape[0]})")
    if problems:
        raise CheckpointError("the released weights do not fit the chosen architecture (--model): " + "; ".join(problems) + ".")
