"""`wenlan pretrain`: train BriVL (the synthetic default needs no options at all)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from ..config import TrainConfig

Opt = typer.Option
# --help shows the config's own defaults; only options given on the command line override
# a --config file (see `given` below).
DEFAULTS = TrainConfig()
DATA = "Data"
MODEL = "Model and loss"
OPTIM = "Optimisation"
RUN = "Run"
SCALE = "Scale and robustness"
# On/off pairs: their two names would squeeze the help of every option in a shared panel.
SWITCHES = "Switches"


def pretrain(
    ctx: typer.Context,
    config: Annotated[Optional[Path], Opt("--config", help="JSON or YAML file with any of these options (the command line wins).", rich_help_panel=RUN)] = None,
    model: Annotated[Optional[str], Opt(help="Architecture name (`wenlan models`) or a model-config JSON file.", rich_help_panel=MODEL)] = DEFAULTS.model,
    dataset: Annotated[Optional[str], Opt(help="synth, aic-icc, brivl-jsonl, jsonl, csv, or webdataset (shards from wenlan data convert, streamed).", rich_help_panel=DATA)] = DEFAULTS.dataset,
    data_dir: Annotated[Optional[str], Opt(help="Folder with the data (for synth: a generated folder; default: a cached copy).", rich_help_panel=DATA)] = None,
    out: Annotated[Optional[str], Opt("--out", "-o", help="Run directory: checkpoints, metrics.jsonl, recall.json.", rich_help_panel=RUN)] = DEFAULTS.out,
    steps: Annotated[Optional[int], Opt(help="Optimizer steps. Default, from the data size (any dataset): max(2000 steps, 10 epochs), at most 100000.", rich_help_panel=OPTIM)] = None,
    epochs: Annotated[Optional[float], Opt(help="Epochs over the training images instead of --steps.", rich_help_panel=OPTIM)] = None,
    batch_size: Annotated[Optional[int], Opt(help="Pairs per step per process.", rich_help_panel=OPTIM)] = DEFAULTS.batch_size,
    lr: Annotated[Optional[float], Opt(help="Peak learning rate (AdamW).", rich_help_panel=OPTIM)] = DEFAULTS.lr,
    weight_decay: Annotated[Optional[float], Opt(help="AdamW weight decay.", rich_help_panel=OPTIM)] = DEFAULTS.weight_decay,
    warmup: Annotated[Optional[int], Opt(help="Linear warm-up steps before the cosine decay (default: 10% of the run, at most 2000).", rich_help_panel=OPTIM)] = None,
    grad_clip: Annotated[Optional[float], Opt(help="Clip the gradient norm (0: off).", rich_help_panel=OPTIM)] = DEFAULTS.grad_clip,
    queue_size: Annotated[Optional[int], Opt(help="MoCo queue length K (a multiple of the global batch).", rich_help_panel=MODEL)] = None,
    momentum: Annotated[Optional[float], Opt(help="Momentum m of the key towers.", rich_help_panel=MODEL)] = None,
    temperature: Annotated[Optional[float], Opt(help="Softmax temperature.", rich_help_panel=MODEL)] = None,
    loss: Annotated[Optional[str], Opt(help="moco (BriVL: momentum towers + queues) or clip (in-batch).", rich_help_panel=MODEL)] = None,
    mask_false_negatives: Annotated[Optional[bool], Opt("--mask-false-negatives/--no-mask-false-negatives", help="moco: a queued key of the query's own image or identical caption is not a negative (default: off, as the model config says).", rich_help_panel=SWITCHES)] = None,
    queue_warmup: Annotated[Optional[str], Opt(help="moco: in-batch loss for the first N steps while the queues fill. auto (default): none with --pretrained; from scratch max(100, steps to fill the queue, 5% of the run), at most half of it.", rich_help_panel=MODEL)] = None,
    pretrained: Annotated[Optional[bool], Opt("--pretrained/--no-pretrained", help="Start the towers from their published weights.", rich_help_panel=SWITCHES)] = None,
    image_weights: Annotated[Optional[str], Opt(help="timm name or local file of the image backbone's weights (with --pretrained).", rich_help_panel=MODEL)] = None,
    text_weights: Annotated[Optional[str], Opt(help="Hub name or local directory of the text model (with --pretrained).", rich_help_panel=MODEL)] = None,
    image_norm_from_config: Annotated[Optional[bool], Opt("--image-norm-from-config", help="With --pretrained: normalise images with the model config's image.mean/std even where they differ from the backbone weights' own (timm's pretrained config).", rich_help_panel=MODEL)] = None,
    trust_remote_code: Annotated[Optional[bool], Opt("--trust-remote-code", help="Allow a hub text model to run its own code (off by default).", rich_help_panel=MODEL)] = None,
    seed: Annotated[Optional[int], Opt(help="Seed of the initialisation and the data order.", rich_help_panel=RUN)] = DEFAULTS.seed,
    device: Annotated[Optional[str], Opt(help="auto, cpu, cuda or cuda:N.", rich_help_panel=RUN)] = DEFAULTS.device,
    workers: Annotated[Optional[int], Opt(help="DataLoader worker processes (default: 0 on 2 cores, else half the cores).", rich_help_panel=RUN)] = None,
    eval_every: Annotated[Optional[int], Opt(help="Evaluate retrieval every N steps (0: only at the end).", rich_help_panel=RUN)] = DEFAULTS.eval_every,
    eval_split: Annotated[Optional[str], Opt(help="Split evaluated during and after training.", rich_help_panel=RUN)] = DEFAULTS.eval_split,
    save_every: Annotated[Optional[int], Opt(help="Write a checkpoint every N steps (0: only at the end).", rich_help_panel=RUN)] = DEFAULTS.save_every,
    keep: Annotated[Optional[int], Opt(help="Step checkpoints to keep.", rich_help_panel=RUN)] = DEFAULTS.keep,
    log_every: Annotated[Optional[int], Opt(help="Write a metrics.jsonl line every N steps.", rich_help_panel=RUN)] = DEFAULTS.log_every,
    max_time: Annotated[Optional[float], Opt(help="Stop cleanly (with a checkpoint) after this many seconds.", rich_help_panel=SCALE)] = None,
    time_budget: Annotated[Optional[str], Opt(help="Train for this long (600, 90s, 10m, 1.5h): the first steps' speed sets the number of steps so warm-up and cosine decay end on time (evaluation comes after). Instead of --steps/--epochs; a resume keeps the plan.", rich_help_panel=OPTIM)] = None,
    resume: Annotated[Optional[str], Opt(help="A checkpoint to continue from, or 'auto' for the latest in --out.", rich_help_panel=SCALE)] = None,
    precision: Annotated[Optional[str], Opt(help="fp32, bf16 or fp16 (fp16 on GPU only).", rich_help_panel=SCALE)] = DEFAULTS.precision,
    grad_checkpointing: Annotated[Optional[bool], Opt("--grad-checkpointing", help="Recompute activations to save memory.", rich_help_panel=SCALE)] = None,
    accum_steps: Annotated[Optional[int], Opt(help="Micro-batches per optimizer step.", rich_help_panel=SCALE)] = DEFAULTS.accum_steps,
    shuffle_bn: Annotated[Optional[bool], Opt("--shuffle-bn/--no-shuffle-bn", help="Shuffle the momentum image tower's batch across processes (default: on for BatchNorm backbones when distributed).", rich_help_panel=SWITCHES)] = None,
    skip_bad: Annotated[Optional[bool], Opt("--skip-bad", help="Skip (and count) unreadable images instead of failing.", rich_help_panel=SCALE)] = None,
    nproc: Annotated[Optional[int], Opt(help="Launch this many processes with torchrun on this machine.", rich_help_panel=SCALE)] = None,
    image_column: Annotated[Optional[str], Opt(help="Image column of jsonl/csv data.", rich_help_panel=DATA)] = None,
    text_column: Annotated[Optional[str], Opt(help="Text column of jsonl/csv data.", rich_help_panel=DATA)] = None,
    synth_train: Annotated[Optional[int], Opt(help="Synthetic training images.", rich_help_panel=DATA)] = DEFAULTS.synth_train,
    synth_val: Annotated[Optional[int], Opt(help="Synthetic validation images.", rich_help_panel=DATA)] = DEFAULTS.synth_val,
) -> None:
    """Train BriVL (by default brivl-tiny on synthetic data).

    With no data options it trains brivl-tiny on the built-in synthetic Chinese dataset
    and prints the validation Recall@K."""
    given = {k: v for k, v in locals().items() if k not in ("ctx", "config", "nproc")}
    # Only what the command line gave (not the defaults shown in --help) overrides the file.
    options = {k: v for k, v in given.items() if ctx.get_parameter_source(k).name not in ("DEFAULT", "DEFAULT_MAP")}
    from ..config import build_train_config, check_number, load_train_config_file

    check_number("--nproc", nproc, 1, 1024, integer=True)
    file_options = load_train_config_file(config) if config else {}
    cfg = build_train_config(file_options, options, where=str(config) if config else "options")
    if nproc is not None and nproc > 1:
        from ..train.launch import launch_torchrun

        raise typer.Exit(launch_torchrun(nproc))
    check_run_out(cfg, config)
    # A resume takes the options given neither here nor in --config from its checkpoint.
    run_pretrain(cfg, explicit=set(file_options) | {k for k, v in options.items() if v is not None})


def check_run_out(cfg, config: Path | None) -> None:
    """--out must not overwrite what the run reads (see wenlan_cli.output_paths). A
    --resume checkpoint counts by its checkpoint folders, so --out may be the run
    directory that holds it (continuing a run where it was)."""
    from ..output_paths import check_outputs, checkpoint_input, file_input, folder_input, path_input

    def existing(value):
        return value if isinstance(value, str) and Path(value).exists() else None

    resume = cfg.resume if cfg.resume and cfg.resume != "auto" else None
    check_outputs([("--out", cfg.out)], [
        *file_input("--config", config), *file_input("--model", existing(cfg.model)),
        *folder_input("--data-dir", cfg.data_dir),
        *(item for item in checkpoint_input("--resume", resume) if item.folder),
        *path_input("--image-weights", existing(cfg.image_weights)),
        *path_input("--text-weights", existing(cfg.text_weights)),
    ])


def run_pretrain(cfg, explicit: set[str] | None = None) -> None:
    from rich.console import Console

    from ..eval.retrieval import format_recall_table
    from ..engine.distributed import shutdown_distributed
    from ..train.loop import Pretrainer

    console = Console(stderr=True)
    try:
        trainer = Pretrainer(cfg, console=console, explicit=explicit)
        result = trainer.run()
        if result.stopped_early and result.stopped_early != "max-time":
            import signal

            # Stopped by a signal after writing a checkpoint: the shell's convention.
            raise typer.Exit(128 + int(getattr(signal, result.stopped_early)))
        if trainer.ctx.is_main and result.metrics is not None:
            Console().print(format_recall_table(result.metrics))
            console.print(f"Checkpoint: {result.checkpoint}\nRecall: {result.out / 'recall.json'}")
    finally:
        shutdown_distributed()


def register(app: typer.Typer) -> None:
    app.command("pretrain")(pretrain)
