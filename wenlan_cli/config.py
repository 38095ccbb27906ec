"""Typed configuration: model architectures (JSON in `model_configs/`) and training runs.

Configs are plain dataclasses so they round-trip through JSON unchanged and so an
unknown or mistyped key is reported by name instead of silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import UsageError
from .option_spec import check_precision_name, device_option, option, precision_option


@dataclass
class ImageTowerConfig:
    """A timm backbone, region pooling over boxes, a small Transformer, an MLP."""

    backbone: str = "test_efficientnet"
    # Extra keyword arguments for `timm.create_model` (e.g. `output_stride`).
    backbone_kwargs: dict = field(default_factory=dict)
    image_size: int = 128
    # Where `--pretrained` weights come from: a timm hub name, a local file or None (= backbone).
    pretrained_source: str | None = None
    # Train only the top N backbone blocks (BriVL: 4); None trains the whole backbone.
    trainable_blocks: int | None = None
    # "roi_align" (torchvision) or "grid" (BriVL's own grid sample + 1x1 conv).
    region_pooling: str = "roi_align"
    pool_size: int = 4
    # Whole-image box + up to max_regions - 1 boxes from the data.
    max_regions: int = 37
    # With no boxes in the data, an N x N grid of boxes stands in.
    grid_size: int = 3
    # Add a learned embedding of each box's position and size to its region vector.
    box_embedding: bool = False
    region_dim: int = 2048
    encoder_layers: int = 4
    encoder_heads: int = 4
    encoder_ff_dim: int | None = None
    mlp_hidden_dim: int = 2048
    dropout: float = 0.1
    # Input normalisation. None: the backbone's own, from timm's pretrained config; stated
    # values must match the pretrained weights' (models/normalization.py). Checkpoints
    # record the values used.
    mean: tuple[float, float, float] | None = None
    std: tuple[float, float, float] | None = None


@dataclass
class TextTowerConfig:
    """A Hugging Face encoder, a small Transformer over its states, an MLP."""

    # Hub name or local directory of a pretrained model (used with --pretrained).
    hf_name: str | None = None
    # A BertConfig as a dict for a tower trained from scratch (no hub needed).
    bert_config: dict = field(default_factory=dict)
    max_length: int = 80
    # Train only the top N encoder layers (BriVL: 4); None trains the whole model.
    trainable_layers: int | None = None
    # The released BriVL pads every text to max_length and runs BERT without an attention
    # mask (the mask only reaches its own Transformer); converted weights need the same.
    language_model_sees_padding: bool = False
    encoder_layers: int = 4
    encoder_heads: int = 4
    encoder_ff_dim: int | None = None
    mlp_hidden_dim: int = 2048
    dropout: float = 0.1
    # Never turned on unless the user asks (`--trust-remote-code`).
    trust_remote_code: bool = False


@dataclass
class ModelConfig:
    """One BriVL architecture: both towers and the contrastive set-up."""

    name: str = "custom"
    embed_dim: int = 2048
    image: ImageTowerConfig = field(default_factory=ImageTowerConfig)
    text: TextTowerConfig = field(default_factory=TextTowerConfig)
    queue_size: int = 9600
    momentum: float = 0.99
    temperature: float = 0.07
    loss: str = "moco"
    # moco: a queued key of the query's own image or identical caption is not a negative.
    # Off by default: no gain measured (benchmarks/README.md, 3a).
    mask_false_negatives: bool = False

    def validate(self) -> None:
        if self.loss not in ("moco", "clip"):
            raise UsageError(f"loss must be 'moco' or 'clip', not {self.loss!r}.")
        if not 0.0 <= self.momentum < 1.0:
            raise UsageError(f"momentum must be in [0, 1), not {self.momentum}.")
        if self.temperature <= 0:
            raise UsageError(f"temperature must be positive, not {self.temperature}.")
        if self.queue_size <= 0:
            raise UsageError(f"queue size must be positive, not {self.queue_size}.")
        if self.image.region_pooling not in ("roi_align", "grid"):
            raise UsageError(
                f"image.region_pooling must be 'roi_align' or 'grid', not {self.image.region_pooling!r}."
            )
        if self.image.max_regions < 1:
            raise UsageError("image.max_regions must be at least 1 (the whole-image box).")
        if self.text.hf_name is None and not self.text.bert_config:
            raise UsageError("text tower needs either text.hf_name or text.bert_config.")
        for name, bound in MODEL_BOUNDS.items():
            check_number(name, _dotted(self, name), *bound)
        for key, bound in BERT_BOUNDS.items():
            if key in self.text.bert_config:
                check_number(f"text.bert_config.{key}", self.text.bert_config[key], *bound, integer=True)
        if self.image.region_dim % self.image.encoder_heads:
            raise UsageError(
                f"image.region_dim ({self.image.region_dim}) must be divisible by "
                f"image.encoder_heads ({self.image.encoder_heads})."
            )


# Sane bounds of every numeric setting: (lowest, highest, lowest excluded, highest excluded).
# None: unbounded on that side. A value outside (or NaN / infinite) is a UsageError naming
# the field, before anything is allocated; sizes above these are typos, not models
# (BriVL-large itself uses embed_dim 2048, image_size 456, region_dim 2048).
Bound = tuple  # (low, high, low_open, high_open)
MODEL_BOUNDS: dict[str, Bound] = {
    "embed_dim": (1, 65536, False, False),
    "queue_size": (1, 10_000_000, False, False),
    "temperature": (0, 100, True, False),
    "image.image_size": (16, 4096, False, False),
    "image.pool_size": (1, 64, False, False),
    "image.max_regions": (1, 1024, False, False),
    "image.grid_size": (1, 64, False, False),
    "image.region_dim": (1, 65536, False, False),
    "image.trainable_blocks": (0, None, False, False),
    "image.encoder_layers": (0, 256, False, False),
    "image.encoder_heads": (1, 1024, False, False),
    "image.encoder_ff_dim": (1, 262144, False, False),
    "image.mlp_hidden_dim": (1, 262144, False, False),
    "image.dropout": (0, 1, False, True),
    "text.max_length": (1, 8192, False, False),
    "text.trainable_layers": (0, None, False, False),
    "text.encoder_layers": (0, 256, False, False),
    "text.encoder_heads": (1, 1024, False, False),
    "text.encoder_ff_dim": (1, 262144, False, False),
    "text.mlp_hidden_dim": (1, 262144, False, False),
    "text.dropout": (0, 1, False, True),
}
BERT_BOUNDS: dict[str, Bound] = {
    "hidden_size": (1, 65536, False, False),
    "num_hidden_layers": (1, 256, False, False),
    "num_attention_heads": (1, 1024, False, False),
    "intermediate_size": (1, 262144, False, False),
    "max_position_embeddings": (1, 65536, False, False),
    "type_vocab_size": (1, 1024, False, False),
    "vocab_size": (1, 10_000_000, False, False),
}


def _dotted(obj, name: str):
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _show(number) -> str:
    return f"{number:g}" if isinstance(number, float) else str(number)


def check_number(
    name: str, value, low=None, high=None, low_open: bool = False, high_open: bool = False, *, integer: bool = False
) -> None:
    """One rule for every numeric option or config field: a finite number within its
    bounds (None passes: the setting is off or defaulted), else a UsageError naming it."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not isinstance(value, int)):
        raise UsageError(f"{name} must be {'an integer' if integer else 'a number'}, not {value!r}.")
    parts = []
    if low is not None:
        parts.append(f"above {_show(low)}" if low_open else f"at least {_show(low)}")
    if high is not None:
        parts.append(f"below {_show(high)}" if high_open else f"at most {_show(high)}")
    wanted = " and ".join(parts) or "finite"
    if not math.isfinite(value):
        raise UsageError(f"{name} must be a finite number{' ' + wanted if parts else ''}, not {_show(value)}.")
    if (low is not None and (value < low or (low_open and value == low))) or (
        high is not None and (value > high or (high_open and value == high))
    ):
        raise UsageError(f"{name} must be {wanted}, not {_show(value)}.")


def _field_types(cls) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a dataclass field annotation; convert lists to tuples etc."""
    origin = typing.get_origin(annotation)
    if dataclasses.is_dataclass(annotation):
        if not isinstance(value, dict):
            raise UsageError(f"{where} must be an object, not {type(value).__name__}.")
        return from_dict(annotation, value, where)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except UsageError as exc:
                errors.append(exc)
        raise errors[0]
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise UsageError(f"{where} must be a list, not {type(value).__name__}.")
        args = typing.get_args(annotation)
        if len(args) != len(value) and not (len(args) == 2 and args[1] is Ellipsis):
            raise UsageError(f"{where} must have {len(args)} items, not {len(value)}.")
        return tuple(_coerce(v, args[0], where) for v in value)
    if origin is dict or annotation is dict:
        if not isinstance(value, dict):
            raise UsageError(f"{where} must be an object, not {type(value).__name__}.")
        return dict(value)
    if origin is list:
        if not isinstance(value, list):
            raise UsageError(f"{where} must be a list, not {type(value).__name__}.")
        args = typing.get_args(annotation)
        return [_coerce(v, args[0], where) for v in value] if args else list(value)
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise UsageError(f"{where} must be a number, not {value!r}.")
        return float(value)
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                return int(value)
            raise UsageError(f"{where} must be an integer, not {value!r}.")
        return value
    if annotation is bool:
        if not isinstance(value, bool):
            raise UsageError(f"{where} must be true or false, not {value!r}.")
        return value
    if annotation is str:
        if not isinstance(value, str):
            raise UsageError(f"{where} must be a string, not {value!r}.")
        return value
    if annotation is Path:  # a command's file option, from a --config file or the command line
        if not isinstance(value, (str, Path)):
            raise UsageError(f"{where} must be a path, not {value!r}.")
        return Path(value)
    return value


def from_dict(cls, data: dict, where: str = "config"):
    """Build dataclass `cls` from `data`, naming any unknown or mistyped key."""
    types_ = _field_types(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise UsageError(
            f"{where + ' has unknown' if where else 'unknown'} key {unknown[0]!r}; known keys: {', '.join(sorted(known))}."
        )
    kwargs = {k: _coerce(v, types_[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def to_dict(obj) -> dict:
    """JSON-ready dict of a config dataclass (tuples become lists)."""
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def load_model_config(path: str | Path) -> ModelConfig:
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UsageError(f"model config {path} does not exist.") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"model config {path} is not valid JSON: {exc}.") from None
    if not isinstance(data, dict):
        raise UsageError(f"model config {path} must hold a JSON object.")
    data.pop("_comment", None)
    try:
        config = from_dict(ModelConfig, data, where="")
        config.validate()
    except UsageError as exc:  # the field's name after the file's, each said once
        raise UsageError(f"model config {path}: {exc}") from None
    return config


class Panel:
    """The help panels of `wenlan pretrain --help`."""

    DATA, MODEL, OPTIM, RUN = "Data", "Model and loss", "Optimisation", "Run"
    SCALE = "Scale and robustness"
    # On/off pairs: their two names would squeeze the help of every option in a shared panel.
    SWITCHES = "Switches"


@dataclass
class TrainConfig:
    """Everything `wenlan pretrain` accepts; `--config FILE` holds the same keys. Each field
    is one option (`option_spec.option`: help and panel), saved as `train_config.json`."""

    model: str = option("brivl-tiny", help="Architecture name (`wenlan models`) or a model-config JSON file.", panel=Panel.MODEL)
    dataset: str = option("synth", help="synth, aic-icc, brivl-jsonl, jsonl, csv, a Chinese-CLIP benchmark (muge, flickr30k-cn, coco-cn), or webdataset (shards from wenlan data convert, streamed).", panel=Panel.DATA)
    data_dir: str | None = option(None, help="Folder with the data (for synth: a generated folder; default: a cached copy).", panel=Panel.DATA)
    out: str = option("runs/pretrain", "--out", "-o", help="Run directory: checkpoints, metrics.jsonl, recall.json.", panel=Panel.RUN)
    steps: int | None = option(None, help="Optimizer steps. Default, from the data size (any dataset): max(2000 steps, 10 epochs), at most 100000.", panel=Panel.OPTIM)
    epochs: float | None = option(None, help="Epochs over the training images instead of --steps.", panel=Panel.OPTIM)
    batch_size: int = option(64, help="Pairs per step per process.", panel=Panel.OPTIM)
    lr: float = option(1e-3, help="Peak learning rate (AdamW).", panel=Panel.OPTIM)
    weight_decay: float = option(0.05, help="AdamW weight decay.", panel=Panel.OPTIM)
    # Learning-rate warm-up steps; None: 10 % of the run, at most 2,000 (engine/budget.py).
    warmup: int | None = option(None, help="Linear warm-up steps before the cosine decay (default: 10% of the run, at most 2000).", panel=Panel.OPTIM)
    grad_clip: float = option(1.0, help="Clip the gradient norm (0: off).", panel=Panel.OPTIM)
    # Override the model config's contrastive settings when given.
    queue_size: int | None = option(None, help="MoCo queue length K (a multiple of the global batch).", panel=Panel.MODEL)
    momentum: float | None = option(None, help="Momentum m of the key towers.", panel=Panel.MODEL)
    temperature: float | None = option(None, help="Softmax temperature.", panel=Panel.MODEL)
    loss: str | None = option(None, help="moco (BriVL: momentum towers + queues) or clip (in-batch).", panel=Panel.MODEL)
    mask_false_negatives: bool | None = option(None, "--mask-false-negatives/--no-mask-false-negatives", help="moco: a queued key of the query's own image or identical caption is not a negative (default: off, as the model config says).", panel=Panel.SWITCHES)
    # moco: the first N steps take the in-batch loss while the queues fill (towers trained
    # from scratch start collapsed; see benchmarks/README.md, queue vs in-batch). "auto":
    # none with --pretrained, else engine/budget.py's auto_queue_warmup.
    queue_warmup: int | str = option("auto", help="moco: in-batch loss for the first N steps while the queues fill. auto: none with --pretrained; from scratch max(100, steps to fill the queue, 5% of the run), at most half of it.", panel=Panel.MODEL, cli_type=str)
    seed: int = option(0, help="Seed of the initialisation and the data order.", panel=Panel.RUN)
    device: str = device_option(panel=Panel.RUN)
    workers: int | None = option(None, help="DataLoader worker processes (default: 0 on 2 cores, else half the cores).", panel=Panel.RUN)
    eval_every: int = option(0, help="Evaluate retrieval every N steps (0: only at the end).", panel=Panel.RUN)
    eval_split: str = option("val", help="Split evaluated during and after training.", panel=Panel.RUN)
    save_every: int = option(0, help="Write a checkpoint every N steps (0: only at the end).", panel=Panel.RUN)
    keep: int = option(2, help="Step checkpoints to keep.", panel=Panel.RUN)
    log_every: int = option(10, help="Write a metrics.jsonl line every N steps.", panel=Panel.RUN)
    max_time: float | None = option(None, help="Stop cleanly (with a checkpoint) after this many seconds.", panel=Panel.SCALE)
    # Plan the number of steps so warm-up and decay end after this long ("10m", "1.5h",
    # seconds); measured from the first steps' speed, kept on resume.
    time_budget: str | float | None = option(None, help="Train for this long (600, 90s, 10m, 1.5h): the first steps' speed sets the number of steps so warm-up and cosine decay end on time (evaluation comes after). Instead of --steps/--epochs; a resume keeps the plan.", panel=Panel.OPTIM, cli_type=str)
    resume: str | None = option(None, help="A checkpoint to continue from, or 'auto' for the latest in --out.", panel=Panel.SCALE)
    precision: str = precision_option(panel=Panel.SCALE)
    grad_checkpointing: bool = option(False, "--grad-checkpointing", help="Recompute activations to save memory.", panel=Panel.SCALE)
    accum_steps: int = option(1, help="Micro-batches per optimizer step.", panel=Panel.SCALE)
    # Shuffle the momentum image tower's batch across processes (BriVL's shuffle-BN);
    # None: on when running distributed with a BatchNorm backbone.
    shuffle_bn: bool | None = option(None, "--shuffle-bn/--no-shuffle-bn", help="Shuffle the momentum image tower's batch across processes (default: on for BatchNorm backbones when distributed).", panel=Panel.SWITCHES)
    skip_bad: bool = option(False, "--skip-bad", help="Skip (and count) unreadable images instead of failing.", panel=Panel.SCALE)
    pretrained: bool = option(False, "--pretrained/--no-pretrained", help="Start the towers from their published weights.", panel=Panel.SWITCHES)
    image_weights: str | None = option(None, help="timm name or local file of the image backbone's weights (with --pretrained).", panel=Panel.MODEL)
    text_weights: str | None = option(None, help="Hub name or local directory of the text model (with --pretrained).", panel=Panel.MODEL)
    # Keep the model config's image.mean/std even where they differ from the pretrained backbone's.
    image_norm_from_config: bool = option(False, "--image-norm-from-config", help="With --pretrained: normalise images with the model config's image.mean/std even where they differ from the backbone weights' own (timm's pretrained config).", panel=Panel.MODEL)
    trust_remote_code: bool = option(False, "--trust-remote-code", help="Allow a hub text model to run its own code (off by default).", panel=Panel.MODEL)
    image_column: str | None = option(None, help="Image column of jsonl/csv data.", panel=Panel.DATA)
    text_column: str | None = option(None, help="Text column of jsonl/csv data.", panel=Panel.DATA)
    # Sizes of the synthetic dataset used when no data is given (test size and seed: --config only).
    synth_train: int = option(10000, help="Synthetic training images.", panel=Panel.DATA)
    synth_val: int = option(1000, help="Synthetic validation images.", panel=Panel.DATA)
    synth_test: int = option(1000, config_only=True)
    synth_seed: int = option(0, config_only=True)

    def validate(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give --steps or --epochs, not both.")
        for name in ("batch_size", "accum_steps", "log_every", "keep"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.steps is not None and self.steps < 1:
            raise UsageError("--steps must be at least 1.")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError("--epochs must be positive.")
        self.queue_warmup = _queue_warmup_value(self.queue_warmup)
        if self.time_budget is not None:
            from .durations import parse_duration

            parse_duration(self.time_budget)
            if self.steps is not None or self.epochs is not None:
                raise UsageError("give --time-budget or --steps/--epochs, not both.")
        if self.lr <= 0:
            raise UsageError("--lr must be positive.")
        check_precision_name(self.precision)
        if self.loss is not None and self.loss not in ("moco", "clip"):
            raise UsageError(f"--loss must be moco or clip, not {self.loss!r}.")
        for name, bound in TRAIN_BOUNDS.items():
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), *bound)


def _queue_warmup_value(value: int | str) -> int | str:
    """--queue-warmup as given: "auto" or a whole number of steps (a string from the CLI)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return "auto"
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    raise UsageError(f"--queue-warmup must be auto or 0 or more steps, not {value!r}.")


# The bounds of `wenlan pretrain`'s numeric options (and the same keys of --config files);
# None in a field means "off" or "the default" and is not checked.
TRAIN_BOUNDS: dict[str, Bound] = {
    "steps": (1, None, False, False),
    "epochs": (0, None, True, False),
    "batch_size": (1, None, False, False),
    "lr": (0, None, True, False),
    "weight_decay": (0, None, False, False),
    "warmup": (0, None, False, False),
    "grad_clip": (0, None, False, False),
    "queue_size": (1, 10_000_000, False, False),
    "momentum": (0, 1, False, True),
    "temperature": (0, 100, True, False),
    "workers": (0, 256, False, False),
    "eval_every": (0, None, False, False),
    "save_every": (0, None, False, False),
    "keep": (1, None, False, False),
    "log_every": (1, None, False, False),
    "max_time": (0, None, True, False),
    "accum_steps": (1, None, False, False),
    "synth_train": (1, None, False, False),
    "synth_val": (0, None, False, False),
    "synth_test": (0, None, False, False),
}


def load_config_file(path: str | Path) -> dict:
    """The options in a JSON or YAML `--config` file, keys as option names (dashes or
    underscores), returned underscored."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise UsageError(f"config file {path} does not exist.") from None
    except OSError as exc:
        raise UsageError(f"config file {path} cannot be read ({(exc.strerror or str(exc)).lower()}).") from None
    except UnicodeDecodeError as exc:
        raise UsageError(f"config file {path} is not UTF-8 text (byte {exc.start}).") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text)
        else:
            data = json.loads(text)
    except Exception as exc:  # yaml and json raise different types
        raise UsageError(f"config file {path} is not valid {'YAML' if path.suffix in ('.yaml', '.yml') else 'JSON'}: {_parse_error(exc)}.") from None
    if not isinstance(data, dict):
        raise UsageError(f"config file {path} must hold a mapping of option names to values.")
    return {str(k).replace("-", "_"): v for k, v in data.items()}


def _parse_error(exc: Exception) -> str:
    """One line about a JSON or YAML syntax error (YAML's own message spans several lines)."""
    problem, mark = getattr(exc, "problem", None), getattr(exc, "problem_mark", None)
    if problem and mark is not None:
        return f"{problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(exc).split())


load_train_config_file = load_config_file


def build_config(cls, file_options: dict, cli_options: dict, where: str = "config", *, validate: bool = True):
    """A config dataclass from its defaults < a config file < options given on the command
    line (those not None); an unknown or mistyped key is named after `where` (the file)."""
    merged = dict(file_options)
    merged.update({k: v for k, v in cli_options.items() if v is not None})
    try:
        config = from_dict(cls, merged, where="")
    except UsageError as exc:
        raise UsageError(f"{where}: {exc}" if where not in ("options", "config") else str(exc)) from None
    if validate and hasattr(config, "validate"):
        config.validate()
    return config


def build_train_config(file_options: dict, cli_options: dict, where: str = "config") -> TrainConfig:
    """Defaults < config file < options given on the command line (those not None)."""
    return build_config(TrainConfig, file_options, cli_options, where)
