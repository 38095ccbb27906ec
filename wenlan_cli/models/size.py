"""How much memory a model config asks for, estimated from its sizes before anything is
allocated, so a typo such as embed_dim 10^9 is one sentence naming the field instead of
an allocation that takes the machine's memory (or a kernel kill).

The estimate counts the big matrices of the towers' heads, the from-scratch BERT, the
projections and the MoCo queues; the image backbone (a fixed timm model) is taken as
2048 channels. It is a lower bound, good to a small factor, which is all the check needs.
"""

from __future__ import annotations

import os

from ..config import ModelConfig
from ..errors import UsageError

# Bytes per parameter: float32 weights; training adds the gradient, AdamW's two moments
# and (moco) the momentum towers' copy.
BYTES_INFERENCE = 4
BYTES_TRAINING = 4 * 5
BACKBONE_CHANNELS = 2048
DEFAULT_VOCAB = 21128  # the Chinese BERT vocabulary


def _head(prefix: str, dim: tuple[str, int], tower, embed_dim: int) -> list[tuple[int, dict[str, int]]]:
    name, d = dim
    layers = tower.encoder_layers
    ff = tower.encoder_ff_dim or 4 * d
    h = tower.mlp_hidden_dim
    return [
        (4 * layers * d * d, {name: d, f"{prefix}.encoder_layers": layers}),
        (2 * layers * d * ff, {name: d, f"{prefix}.encoder_ff_dim": ff}),
        (d * h, {name: d, f"{prefix}.mlp_hidden_dim": h}),
        (h * embed_dim, {f"{prefix}.mlp_hidden_dim": h, "embed_dim": embed_dim}),
    ]


def parameter_terms(config: ModelConfig, vocab_size: int | None = None) -> list[tuple[int, dict[str, int]]]:
    """(parameters, {field: size}) for each large matrix the config implies."""
    image, text, embed = config.image, config.text, config.embed_dim
    terms = [(BACKBONE_CHANNELS * image.region_dim, {"image.region_dim": image.region_dim})]
    terms += _head("image", ("image.region_dim", image.region_dim), image, embed)
    bert = text.bert_config or {}
    hidden = int(bert.get("hidden_size", 1024))
    inter = int(bert.get("intermediate_size", 4 * hidden))
    layers = int(bert.get("num_hidden_layers", 24))
    positions = int(bert.get("max_position_embeddings", 512))
    vocab = int(vocab_size or bert.get("vocab_size", DEFAULT_VOCAB))
    key = "text.bert_config.hidden_size"
    terms += [
        (vocab * hidden, {key: hidden, "vocabulary": vocab}),
        (positions * hidden, {key: hidden, "text.bert_config.max_position_embeddings": positions}),
        (4 * layers * hidden * hidden, {key: hidden, "text.bert_config.num_hidden_layers": layers}),
        (2 * layers * hidden * inter, {key: hidden, "text.bert_config.intermediate_size": inter}),
    ]
    terms += _head("text", (key, hidden), text, embed)
    if config.loss == "moco":
        terms.append((2 * config.queue_size * embed, {"queue_size": config.queue_size, "embed_dim": embed}))
    return terms


def estimate_bytes(config: ModelConfig, vocab_size: int | None = None, training: bool = True) -> tuple[int, str]:
    """Estimated bytes to build (and train) the model, and the field of its largest size."""
    terms = parameter_terms(config, vocab_size)
    per = BYTES_TRAINING if training else BYTES_INFERENCE
    total = sum(n for n, _ in terms) * per
    biggest = max(terms, key=lambda t: t[0])[1]
    field = max(biggest, key=biggest.get)
    return total, field


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux: MemAvailable), None if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits_in_memory(config: ModelConfig, vocab_size: int | None = None, training: bool = True, available: int | None = None) -> None:
    """UsageError naming the largest field when the estimate exceeds the available memory."""
    needed, field = estimate_bytes(config, vocab_size, training)
    available = available_memory() if available is None else available
    if available is None or needed <= available:
        return
    value = _field_value(config, field, vocab_size)
    raise UsageError(
        f"the model {config.name!r} needs about {needed / 2**30:,.1f} GiB to {'train' if training else 'load'} but "
        f"{available / 2**30:,.1f} GiB of memory is available; its largest size is {field} = {value:,}."
    )


def _field_value(config: ModelConfig, field: str, vocab_size: int | None):
    if field == "vocabulary":
        return vocab_size or config.text.bert_config.get("vocab_size", DEFAULT_VOCAB)
    obj = config
    for part in field.split("."):
        obj = obj[part] if isinstance(obj, dict) else getattr(obj, part)
    return obj
