"""`wenlan encode`: image files/folders or texts to an (N, D) float32 .npy.

The options, their checks, the progress bar and the files written; gathering the inputs,
encoding them and the manifest are `wenlan_cli/encode_inputs.py`."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import typer

from ..declared import Invocation, declared_command
from ..option_spec import device_option, inference_workers_option, option, precision_option


@dataclass(kw_only=True)  # the required --checkpoint follows the optional PATHS
class EncodeConfig:
    """The options of `wenlan encode` (and the keys of its `--config` file)."""

    paths: list[Path] | None = option(None, help="Image files or folders (searched recursively: jpg, png, webp, bmp).", argument=True)
    checkpoint: str = option(help="Checkpoint directory, or a run directory.")
    output: Path | None = option(None, "--output", "-o", help="The .npy to write (default: stdout, when it is redirected).")
    texts: Path | None = option(None, help="Encode the texts of this file (one per line) instead of images.")
    manifest: Path | None = option(None, help="Where to write the row order (default: next to --output).")
    dataset: str | None = option(None, help="Encode a dataset split instead (its boxes are used): synth, aic-icc, ...")
    data_dir: str | None = option(None, help="Folder of --dataset (synth: default is the cached copy).")
    split: str = option("val", help="Split of --dataset.")
    captions: bool = option(False, "--captions", help="With --dataset: encode the split's captions (in record order) instead of its images.")
    skip_bad: bool = option(False, "--skip-bad", help="Leave unreadable images out (the manifest lists them) instead of failing.")
    batch_size: int = option(128, help="Items per forward pass.")
    workers: int | None = inference_workers_option()
    device: str = device_option()
    precision: str = precision_option()
    backend: str = option("torch", help="torch, or onnx: --checkpoint is then a bundle of `wenlan export onnx`, run on onnxruntime without torch.")


def _encode_command(call: Invocation, cfg: EncodeConfig) -> None:
    """Encode images or texts into vectors (.npy).

    The vectors are L2-normalised float32, one row per item, in the order the manifest
    records (folders: sorted paths)."""
    from rich.console import Console

    from ..backends import open_backend
    from ..encode_inputs import collect_inputs, manifest_of, manifest_file
    from ..errors import UsageError

    paths, checkpoint, output, texts, manifest = cfg.paths, cfg.checkpoint, cfg.output, cfg.texts, cfg.manifest
    dataset, data_dir, split, captions, backend = cfg.dataset, cfg.data_dir, cfg.split, cfg.captions, cfg.backend
    batch_size, workers, device, precision = cfg.batch_size, cfg.workers, cfg.device, cfg.precision
    dev = _check_options(paths, checkpoint, output, texts, manifest, dataset, data_dir, captions, backend,
                         device=device, precision=precision, batch_size=batch_size, workers=workers)
    if backend == "torch":
        from ..data.sources import check_dataset_options
        from ..engine.checkpoint import resolve_checkpoint

        if dataset is not None:
            check_dataset_options(dataset, data_dir)
        resolve_checkpoint(checkpoint)  # a missing checkpoint is named before any data is read or generated
    err = Console(stderr=True)
    inputs = collect_inputs(paths, texts, dataset, data_dir, split, captions)
    for entry in inputs.not_files:
        err.print(f"skipped {entry['path']}: {entry['reason']}", markup=False, highlight=False, soft_wrap=True)
    if not inputs.items:
        raise UsageError(f"nothing to encode: {'no non-blank lines in ' + str(texts) if texts else 'no images found'}.")
    encoder = open_backend(backend, checkpoint, device=dev, precision=precision)
    array, rows, skipped = _encode(encoder, inputs, err, batch_size=batch_size, workers=workers, skip_bad=cfg.skip_bad)
    manifest_path = manifest_file(output, manifest)
    _save(array, output)
    if manifest_path is not None:
        manifest_path.parent.mkdir(parents=True, exist_ok=True)
        manifest_path.write_text(json.dumps(manifest_of(
            encoder.path, backend, inputs, array.shape, rows, skipped, dataset=dataset, split=split,
        ), ensure_ascii=False, indent=1), encoding="utf-8")
    where = str(output) if output is not None else "stdout"
    err.print(f"Encoded {array.shape[0]} {'texts' if inputs.texts else 'images'} -> {where} {tuple(array.shape)}"
              + (f"; row order in {manifest_path}" if manifest_path else "; pass --manifest FILE to record the row order")
              + (f"; skipped {len(skipped)} unreadable image(s) or entries that are not files" if skipped else ""))


def _check_options(paths, checkpoint, output, texts, manifest, dataset, data_dir, captions, backend, **inference):
    """Every option checked before anything is read; returns the device."""
    from ..backends import check_backend, check_onnx_options
    from ..encode_inputs import manifest_file
    from ..errors import UsageError
    from ..output_paths import check_outputs, checkpoint_input, file_input, folder_input, path_input
    from .options import check_file_output, check_inference_options

    sources = sum(x for x in (bool(paths), texts is not None, dataset is not None))
    if sources > 1:
        raise UsageError("give one of: image PATHS, --texts FILE or --dataset NAME.")
    if sources == 0:
        raise UsageError("give image files or folders to encode, --texts FILE, or --dataset NAME.")
    if captions and dataset is None:
        raise UsageError("--captions needs --dataset.")
    if output is None and sys.stdout.isatty():
        raise UsageError("refusing to write binary .npy data to a terminal; pass -o FILE.npy or redirect stdout.")
    check = check_onnx_options if check_backend(backend) == "onnx" else check_inference_options
    dev = check(**inference)
    check_outputs(
        [("--output", output), ("--manifest", manifest_file(output, manifest))],
        [*(i for p in paths or [] for i in path_input("PATHS", p)), *file_input("--texts", texts),
         *checkpoint_input("--checkpoint", checkpoint), *folder_input("--data-dir", data_dir)],
    )
    if output is not None and output.suffix != ".npy":
        raise UsageError(f"--output {output} should end in .npy.")
    check_file_output("--output", output)
    check_file_output("--manifest", manifest)
    return dev


def _encode(encoder, inputs, err, *, batch_size, workers, skip_bad):
    """`encode_inputs`' (array, manifest rows, skipped entries), with a progress bar on a terminal."""
    from ..encode_inputs import encode_inputs
    from ..engine.progress import counting_progress
    from .options import inference_workers

    progress = counting_progress("encoding", err, disable=not err.is_terminal)  # a bar only on a terminal (no stray newline in logs)
    with progress:
        task = progress.add_task("encode", total=len(inputs.items))
        return encode_inputs(encoder, inputs, batch_size=batch_size, workers=inference_workers(workers), skip_bad=skip_bad,
                             on_batch=lambda n: progress.advance(task, n))


def _save(array, output: Path | None) -> None:
    """The .npy to `output`, or to stdout (a closed pipe is a quiet exit)."""
    import numpy as np

    if output is not None:
        output.parent.mkdir(parents=True, exist_ok=True)
        np.save(output, array)
        return
    try:
        np.save(WriteOnly(sys.stdout.buffer), array)
        sys.stdout.buffer.flush()
    except BrokenPipeError:  # the reader has all it wanted (`| head -c 10`)
        from . import closed_pipe_exit

        raise typer.Exit(closed_pipe_exit()) from None


class WriteOnly:
    """A stream seen only through `write`. numpy writes a real file with C's fwrite, which on
    a closed pipe (`wenlan encode ... | head -c 10`) fails as "OSError: N requested and M
    written"; through `write` the same failure is a BrokenPipeError, which the command
    turns into a quiet exit as other Unix tools do. Each write is completed (an
    unbuffered stdout, `python -u`, may take part of it and return the count)."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def write(self, data) -> int:
        view = memoryview(data).cast("B")
        while view:
            view = view[self._stream.write(view) or 0 :]
        return len(data)


encode = declared_command(_encode_command, EncodeConfig)


def register(app: typer.Typer) -> None:
    app.command("encode")(encode)
