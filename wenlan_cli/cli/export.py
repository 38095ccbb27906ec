"""`wenlan export ...`: a checkpoint in a deployment format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

Opt = typer.Option

app = typer.Typer(help="Export a checkpoint for deployment.", no_args_is_help=True)


@app.command("onnx")
def onnx(
    checkpoint: Annotated[str, typer.Argument(help="Checkpoint directory, or a run directory.")],
    out_dir: Annotated[Path, typer.Argument(help="The bundle folder to create (must not exist, or be empty).")],
    dataset: Annotated[Optional[str], Opt(help="Verify on this dataset's split (synth, aic-icc, ...) instead of generated inputs; adds the Recall@K check.")] = None,
    data_dir: Annotated[Optional[str], Opt(help="Folder of --dataset (synth: default is the cached copy).")] = None,
    split: Annotated[str, Opt(help="Split of --dataset.")] = "val",
    samples: Annotated[int, Opt(help="Images (the split's first records) and texts to verify on.")] = 64,
    threshold: Annotated[float, Opt(help="Lowest cosine allowed between a row's ONNX and PyTorch vectors.")] = 0.9999,
) -> None:
    """Write the image and text towers as ONNX graphs (dynamic batch), the tokenizer and
    preprocessing.json into OUT_DIR, after proving that they reproduce the checkpoint."""
    from rich.console import Console

    from ..export.onnx import export_onnx
    from ..output_paths import check_outputs, checkpoint_input, folder_input

    check_outputs([("OUT_DIR", out_dir)], [*checkpoint_input("CHECKPOINT", checkpoint), *folder_input("--data-dir", data_dir)])
    err = Console(stderr=True)
    report = export_onnx(checkpoint, out_dir, dataset=dataset, data_dir=data_dir, split=split, samples=samples,
                         threshold=threshold, on_step=lambda text: err.print(f"{text}...", markup=False, highlight=False))
    parity = report.parity
    line = (f"Verified on {parity.image.rows} images and {parity.text.rows} texts ({parity.source}): lowest cosine "
            f"image {parity.image.worst_cosine:.6f}, text {parity.text.worst_cosine:.6f}; repeated runs identical")
    if parity.recall_onnx is not None:
        line += (f"; Recall@1/5/10 text->image {parity.recall_onnx['t2i_r1']:.2f}/{parity.recall_onnx['t2i_r5']:.2f}/"
                 f"{parity.recall_onnx['t2i_r10']:.2f}, the same as PyTorch")
    err.print(line + ".", markup=False, highlight=False)
    typer.echo(f"Wrote {report.out_dir} ({', '.join(report.files)})")
