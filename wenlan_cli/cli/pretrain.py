"""`wenlan pretrain`: train BriVL (the synthetic default needs no options at all)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..config import Panel, TrainConfig, check_number
from ..option_spec import option
from ..declared import Invocation, declared_command


@dataclass
class Launch:
    """Options of the launcher, never saved with the run's config."""

    nproc: int | None = option(None, help="Launch this many processes with torchrun on this machine.", panel=Panel.SCALE)

    def validate(self) -> None:
        check_number("--nproc", self.nproc, 1, 1024, integer=True)


def _pretrain(call: Invocation, cfg: TrainConfig, launch: Launch) -> None:
    """Train BriVL (by default brivl-tiny on synthetic data).

    With no data options it trains brivl-tiny on the built-in synthetic Chinese dataset
    and prints the validation Recall@K."""
    if launch.nproc is not None and launch.nproc > 1:
        from ..train.launch import launch_torchrun

        raise typer.Exit(launch_torchrun(launch.nproc))
    check_run_out(cfg, call.config_file)
    # A resume takes the options given neither here nor in --config from its checkpoint.
    run_pretrain(cfg, explicit=call.explicit())


# One option per TrainConfig field (its help and panel sit on the field) and --nproc.
pretrain = declared_command(_pretrain, TrainConfig, Launch, config_panel=Panel.RUN)


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
