"""`wenlan data ...`: dataset utilities (the synthetic default)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(help="Dataset utilities.", no_args_is_help=True)
Opt = typer.Option


@app.command("synth")
def synth(
    out_dir: Annotated[Path, typer.Argument(help="Folder to write the AIC-ICC-layout dataset into.")],
    train: Annotated[int, Opt(help="Training images.")] = 10000,
    val: Annotated[int, Opt(help="Validation images (all with distinct attributes).")] = 1000,
    test: Annotated[int, Opt(help="Test images (distinct from each other and from val).")] = 1000,
    seed: Annotated[int, Opt(help="Seed; the same seed writes the same files.")] = 0,
    image_size: Annotated[int, Opt(help="Side of the square images in pixels.")] = 128,
) -> None:
    """Write the compositional Chinese image-caption dataset (5 captions and exact object
    boxes per image) in the AIC-ICC release layout."""
    from rich.progress import Progress

    from ..data.synth_folder import write_synthetic_folder
    from ..data.synthetic import max_unique_scenes
    from ..errors import UsageError

    from ..config import check_number

    for name, value in (("train", train), ("val", val), ("test", test)):
        if value < 0:
            raise UsageError(f"--{name} must not be negative.")
    # Drawing happens at full size in memory: 1024 px is 3 MB an image; 100000 px would be 30 GB.
    check_number("--image-size", image_size, 32, 1024, integer=True)
    if val + test > max_unique_scenes() // 2:
        raise UsageError(f"--val + --test may be at most {max_unique_scenes() // 2} (distinct scenes).")
    with Progress(transient=True) as progress:
        task = progress.add_task("writing images", total=train + val + test)
        write_synthetic_folder(
            out_dir, train=train, val=val, test=test, seed=seed, image_size=image_size,
            progress=lambda: progress.advance(task), log=lambda message: progress.console.print(message, markup=False, highlight=False),
        )
    typer.echo(f"Wrote {train} train / {val} val / {test} test images to {out_dir} (AIC-ICC layout).")


def _register_commands() -> None:
    from . import data_check, data_convert

    data_convert.register(app)
    data_check.register(app)


_register_commands()
