"""What `wenlan finetune-caption` accepts: one dataclass, each field its option.

A field gives the option's name, type and default; `option(...)` its help (and flags when
not `--field-name`). The command (`commands.py`), `--config` files and the saved
`finetune_config.json` all use these fields. This module imports no torch, so the command
is built on every start of `wenlan` at no cost; the trainer is `finetune.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

from wenlan_cli.plugin_api import UsageError, check_number, option, parse_duration

# Images per forward pass when captioning (validation, `wenlan caption`).
EVAL_BATCH_SIZE = 100

# The bounds of finetune-caption's numeric options, with the core's rule (wenlan_cli.config.
# check_number): NaN, infinities and values outside are refused naming the option.
FINETUNE_BOUNDS = {
    "lr": (0, None, True, False), "tower_lr": (0, None, True, False), "weight_decay": (0, None, False, False),
    "grad_clip": (0, None, False, False), "epochs": (0, None, True, False), "max_time": (0, None, True, False),
    "workers": (0, 256, False, False), "d_model": (1, 65536, False, False), "layers": (1, 256, False, False),
    "heads": (1, 1024, False, False), "ff_dim": (1, 262144, False, False), "dropout": (0, 1, False, True),
    "max_positions": (1, 8192, False, False), "image_size": (16, 4096, False, False),
}


@dataclass
class FinetuneConfig:
    """Everything `wenlan finetune-caption` accepts."""

    checkpoint: str = option(help="Pretrain checkpoint (or run directory) whose image tower the captioner starts from (required: here or in --config).")
    dataset: str = option("synth", help="synth (the built-in data), aic-icc, brivl-jsonl, jsonl, csv, or webdataset (shards from wenlan data convert, streamed).")
    data_dir: str | None = option(None, help="Folder of --dataset (synth: default is the cached copy).")
    out: str = option("runs/caption", help="Run directory: best/ (by val CIDEr), final/, metrics.jsonl, scores.json.")
    train_split: str = option("train", config_only=True)
    eval_split: str = option("val", help="Split to validate and keep the best checkpoint on.")
    steps: int | None = option(None, help="Optimizer steps. Default, from the data size (any dataset): max(2400 steps, 10 epochs), at most 100000.")
    epochs: float | None = option(None, help="Passes over the training images (one caption each), instead of --steps.")
    batch_size: int = option(64, help="Captions per step.")
    lr: float = option(2e-3, help="Peak learning rate of the decoder.")
    tower_lr: float | None = option(None, help="Peak learning rate of the tower's trained weights (default: lr / 2).")
    weight_decay: float = option(0.01, help="AdamW weight decay.")
    # None: CAPTION_RULE's share of the run (100 of the 2,400 steps the rule gives small sets).
    warmup: int | None = option(None, help="Warm-up steps before the cosine decay (default: 1/24 of the run, at most 2000).")
    grad_clip: float = option(1.0, config_only=True)
    label_smoothing: float = option(0.1, help="Label smoothing of the next-token loss.")
    eval_every: int | None = option(None, help="Validate every N steps (0: only at the end; default: four times a run).")
    beam_size: int = option(1, help="Beam width for validation captions (1: greedy); saved with the checkpoint.")
    length_penalty: float = option(0.0, help="Beams ranked by log-probability / length ** this (0: plain sum).")
    max_len: int = option(64, help="Most tokens per generated caption.")
    # The image tower: frozen, its top N backbone blocks (and the layers above) trained, or all
    # trained (the default, also with --train-tower).
    freeze_tower: bool = option(False, "--freeze-tower", help="Keep the whole image tower fixed (its features are then computed once: fast).")
    train_top_blocks: int | None = option(None, help="Train only the tower's top N backbone blocks and the layers above them.")
    train_tower: bool = option(False, "--train-tower", help="Train the whole image tower (the default).")
    char_vocab: bool = option(False, "--char-vocab", help="Build a character vocabulary from the training captions instead of using the checkpoint's tokenizer.")
    d_model: int = option(128, help="Decoder width.")
    layers: int = option(2, help="Decoder layers.")
    heads: int = option(4, help="Decoder attention heads.")
    ff_dim: int = option(512, help="Decoder feed-forward width.")
    dropout: float = option(0.1, help="Decoder dropout.")
    max_positions: int = option(64, help="Longest token sequence the decoder handles; longer training captions are cut.")
    # Saved with the captioner.
    image_size: int | None = option(None, help="Run the image tower at this input size (pixels) instead of the pretrain checkpoint's.")
    seed: int = option(0, help="Random seed.")
    device: str = option("auto", help="auto, cpu, cuda or cuda:N.")
    workers: int | None = option(None, help="DataLoader processes decoding images (default: 0).")
    eval_batch_size: int = option(EVAL_BATCH_SIZE, help="Images per forward pass when captioning the validation split.")
    log_every: int = option(10, help="Log loss and learning rate every N steps.")
    max_time: float | None = option(None, help="Stop after this many seconds (then validate and save).")
    time_budget: str | float | None = option(None, cli_type=str, help=(
        "Train for this long (600, 90s, 10m, 1.5h): the first steps' speed sets the number of steps so warm-up and "
        "decay end on time (validations come on top). Instead of --steps/--epochs."))
    # Periodic validations leave METEOR out: it is slow.
    meteor: bool = option(True, "--meteor/--no-meteor", help="Score METEOR in the final validation (it needs Java and takes a while).")
    # Cache the frozen tower's region sequences in memory (None: when they fit finetune.py's FEATURE_CACHE_LIMIT).
    cache_features: bool | None = option(None, config_only=True)
    skip_bad: bool = option(False, "--skip-bad", help="Skip unreadable images instead of failing.")
    image_column: str | None = option(None, help="Image column of jsonl/csv data.")
    text_column: str | None = option(None, help="Text column of jsonl/csv data.")

    def tower_mode(self) -> tuple[str, int]:
        """("frozen" | "top" | "all", top blocks); the whole tower trains unless told otherwise."""
        chosen = [name for name, on in (
            ("--freeze-tower", self.freeze_tower),
            ("--train-top-blocks", self.train_top_blocks is not None),
            ("--train-tower", self.train_tower),
        ) if on]  # fmt: skip
        if len(chosen) > 1:
            raise UsageError(f"give one of {' / '.join(chosen)}, not both.")
        if self.freeze_tower:
            return "frozen", 0
        if self.train_top_blocks is not None:
            return "top", self.train_top_blocks
        return "all", 0

    def decode_options(self):
        """The validation's `decoding.DecodeOptions` (imported here: that module needs torch)."""
        from .decoding import DecodeOptions

        return DecodeOptions(beam_size=self.beam_size, length_penalty=self.length_penalty, max_len=self.max_len)

    def validate(self) -> None:
        self._check_length()
        if self.warmup is not None and self.warmup < 0:
            raise UsageError("--warmup must be 0 or more steps.")
        for name in ("batch_size", "eval_batch_size", "log_every"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be at least 1.")
        if self.lr <= 0 or (self.tower_lr is not None and self.tower_lr <= 0):
            raise UsageError("learning rates must be positive.")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise UsageError(f"--label-smoothing must be in [0, 1), not {self.label_smoothing}.")
        if self.image_size is not None and self.image_size < 16:
            raise UsageError(f"--image-size must be at least 16 pixels, not {self.image_size}.")
        if self.train_top_blocks is not None and self.train_top_blocks < 0:
            raise UsageError("--train-top-blocks must be 0 or more.")
        if self.eval_every is not None and self.eval_every < 0:
            raise UsageError("--eval-every must be 0 or more.")
        for name, bound in FINETUNE_BOUNDS.items():
            check_number(f"--{name.replace('_', '-')}", getattr(self, name), *bound)
        self.tower_mode()
        self.decode_options().validate()

    def _check_length(self) -> None:
        """One way to say how long to train: --steps, --epochs or --time-budget."""
        if self.steps is not None and self.epochs is not None:
            raise UsageError("give --steps or --epochs, not both.")
        if self.steps is not None and self.steps < 1:
            raise UsageError("--steps must be at least 1.")
        if self.epochs is not None and self.epochs <= 0:
            raise UsageError("--epochs must be positive.")
        if self.time_budget is not None:
            parse_duration(self.time_budget)
            if self.steps is not None or self.epochs is not None:
                raise UsageError("give --time-budget or --steps/--epochs, not both.")
