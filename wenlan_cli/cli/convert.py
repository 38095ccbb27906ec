"""`wenlan convert ...`: bring checkpoints from elsewhere into wenlan's format."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="Convert checkpoints from other code bases.", no_args_is_help=True)


@app.command("brivl")
def brivl(
    checkpoint: Annotated[Path, typer.Argument(help="The released BriVL .pth (e.g. BriVL-1.0-5500w.pth).")],
    out_dir: Annotated[Path, typer.Argument(help="Checkpoint directory to write.")],
    model: Annotated[str, typer.Option(help="Architecture of the weights (a registry name or JSON file).")] = "brivl-base",
    tokenizer: Annotated[Optional[str], typer.Option(help="Hub name or local directory of the text tokenizer (default: the config's text model).")] = None,
    image_size: Annotated[Optional[int], typer.Option(help="Input size; the released inference code used 456.")] = 456,
) -> None:
    """Convert the released BriVL-1.0 weights (torch.load(...)['learnable']) into a wenlan
    checkpoint directory that every command accepts."""
    from ..convert import convert_brivl
    from ..output_paths import check_outputs, file_input, path_input

    model_file = model if Path(model).is_file() else None
    check_outputs([("OUT_DIR", out_dir)], [*file_input("CHECKPOINT", checkpoint), *path_input("--tokenizer", tokenizer),
                                          *file_input("--model", model_file)])
    path = convert_brivl(checkpoint, out_dir, model=model, tokenizer=tokenizer, image_size=image_size)
    typer.echo(f"Wrote {path}")
