"""`wenlan export ...`: a checkpoint in a deployment format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import option

app = typer.Typer(help="Export a checkpoint for deployment.", no_args_is_help=True)


@dataclass
class ExportOnnxConfig:
    """The options of `wenlan export onnx` (and the keys of its `--config` file)."""

    checkpoint: str = option(help="Checkpoint directory, or a run directory.", argument=True)
    out_dir: Path = option(help="The bundle folder to create (must not exist, or be empty).", argument=True)
    dataset: str | None = option(None, help="Verify on this dataset's split (synth, aic-icc, ...) instead of generated inputs; adds the Recall@K check.")
    data_dir: str | None = option(None, help="Folder of --dataset (synth: default is the cached copy).")
    split: str = option("val", help="Split of --dataset.")
    samples: int = option(64, help="Images (the split's first records) and texts to verify on.")
    threshold: float = option(0.9999, help="Lowest cosine allowed between a row's ONNX and PyTorch vectors.")


def _onnx(call: Invocation, cfg: ExportOnnxConfig) -> None:
    """Write the image and text towers as ONNX graphs (dynamic batch), the tokenizer and
    preprocessing.json into OUT_DIR, after proving that they reproduce the checkpoint."""
    from rich.console import Console

    from ..export.onnx import export_onnx
    from ..output_paths import check_outputs, checkpoint_input, folder_input

    checkpoint, out_dir, data_dir = cfg.checkpoint, cfg.out_dir, cfg.data_dir
    check_outputs([("OUT_DIR", out_dir)], [*checkpoint_input("CHECKPOINT", checkpoint), *folder_input("--data-dir", data_dir)])
    err = Console(stderr=True)
    report = export_onnx(checkpoint, out_dir, dataset=cfg.dataset, data_dir=data_dir, split=cfg.split, samples=cfg.samples,
                         threshold=cfg.threshold, on_step=lambda text: err.print(f"{text}...", markup=False, highlight=False))
    parity = report.parity
    line = (f"Verified on {parity.image.rows} images and {parity.text.rows} texts ({parity.source}): lowest cosine "
            f"image {parity.image.worst_cosine:.6f}, text {parity.text.worst_cosine:.6f}; repeated runs identical")
    if parity.recall_onnx is not None:
        line += (f"; Recall@1/5/10 text->image {parity.recall_onnx['t2i_r1']:.2f}/{parity.recall_onnx['t2i_r5']:.2f}/"
                 f"{parity.recall_onnx['t2i_r10']:.2f}, the same as PyTorch")
    err.print(line + ".", markup=False, highlight=False)
    typer.echo(f"Wrote {report.out_dir} ({', '.join(report.files)})")


onnx = app.command("onnx")(declared_command(_onnx, ExportOnnxConfig))
