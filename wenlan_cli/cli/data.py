"""`wenlan data ...`: dataset utilities (the synthetic default)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import option

app = typer.Typer(help="Dataset utilities.", no_args_is_help=True)


@dataclass
class DataSynthConfig:
    """The options of `wenlan data synth` (and the keys of its `--config` file)."""

    out_dir: Path = option(help="Folder to write the AIC-ICC-layout dataset into.", argument=True)
    train: int = option(10000, help="Training images.")
    val: int = option(1000, help="Validation images (all with distinct attributes).")
    test: int = option(1000, help="Test images (distinct from each other and from val).")
    seed: int = option(0, help="Seed; the same seed writes the same files.")
    image_size: int = option(128, help="Side of the square images in pixels.")


def _synth(call: Invocation, cfg: DataSynthConfig) -> None:
    """Write the compositional Chinese image-caption dataset (5 captions and exact object
    boxes per image) in the AIC-ICC release layout."""
    from rich.progress import Progress

    from ..data.synth_folder import write_synthetic_folder
    from ..config import check_number
    from ..data.synthetic import max_unique_scenes
    from ..errors import UsageError

    out_dir, train, val, test, image_size = cfg.out_dir, cfg.train, cfg.val, cfg.test, cfg.image_size
    for name, value in (("train", train), ("val", val), ("test", test)):
        if value < 0:
            raise UsageError(f"--{name} must not be negative.")
    check_number("--train", train, 0, 10_000_000, integer=True)
    # Drawing happens at full size in memory: 1024 px is 3 MB an image; 100000 px would be 30 GB.
    check_number("--image-size", image_size, 32, 1024, integer=True)
    if val + test > max_unique_scenes() // 2:
        raise UsageError(f"--val + --test may be at most {max_unique_scenes() // 2} (distinct scenes).")
    check_disk_space(out_dir, train + val + test, image_size)
    with Progress(transient=True) as progress:
        task = progress.add_task("writing images", total=train + val + test)
        write_synthetic_folder(
            out_dir, train=train, val=val, test=test, seed=cfg.seed, image_size=image_size,
            progress=lambda: progress.advance(task), log=lambda message: progress.console.print(message, markup=False, highlight=False),
        )
    typer.echo(f"Wrote {train} train / {val} val / {test} test images to {out_dir} (AIC-ICC layout).")


synth = app.command("synth")(declared_command(_synth, DataSynthConfig))


# Bytes a synthetic JPEG takes per pixel (measured: about 3 KB at 128 px), plus its annotation.
JPEG_BYTES_PER_PIXEL = 0.25
ANNOTATION_BYTES = 400


def check_disk_space(out_dir: Path, images: int, image_size: int) -> None:
    """Refuse, before writing, a dataset that would not fit on the disk of `out_dir`."""
    import shutil

    from ..errors import UsageError

    needed = images * (JPEG_BYTES_PER_PIXEL * image_size**2 + ANNOTATION_BYTES)
    existing = next((p for p in [out_dir, *out_dir.absolute().parents] if p.exists()), Path("/"))
    free = shutil.disk_usage(existing).free
    if needed > free:
        raise UsageError(
            f"{images:,} images of {image_size} px need about {_size(needed)} but {existing} has "
            f"{_size(free)} free; lower --train or --image-size."
        )


def _size(count: float) -> str:
    return f"{count / 2**30:,.1f} GiB" if count >= 2**30 else f"{count / 2**20:,.0f} MiB"


def _register_commands() -> None:
    from . import data_check, data_convert

    data_convert.register(app)
    data_check.register(app)


_register_commands()
