"""`wenlan export onnx`: a checkpoint as a self-contained, verified ONNX bundle.

The bundle (layout in `runtime.bundle`) is written into a temporary folder next to
OUT_DIR, proven against the PyTorch model (`verify.verify_bundle`) and only then renamed
to OUT_DIR; a bundle that fails the proof is deleted, so OUT_DIR never holds a bundle
that disagrees with its checkpoint.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError, UsageError
from ..runtime.bundle import FORMAT, IMAGE_FILE, PREPROCESSING_FILE, TEXT_FILE, TOKENIZER_DIR, VERSION, load_bundle
from .verify import ParityReport, verify_bundle

DEFAULT_THRESHOLD = 0.9999


@dataclass
class ExportReport:
    out_dir: Path
    parity: ParityReport
    files: list[str]


def describe(loaded, identity: dict) -> dict:
    """The preprocessing.json of a bundle: everything a consumer does before the graphs."""
    config, settings = loaded.config, loaded.settings
    tokenizer = loaded.tokenizer
    return {
        "format": FORMAT,
        "version": VERSION,
        "model": config.name,
        "embed_dim": int(config.embed_dim),
        "output": "embeddings (B, embed_dim) float32, L2-normalised: a dot product is the cosine",
        "image": {
            "file": IMAGE_FILE,
            "size": settings.image_size,
            "resize": "decode to RGB (EXIF orientation applied, alpha on white), bilinear resize to size x size",
            "mean": list(settings.mean),
            "std": list(settings.std),
            "normalize": "float32 (pixel - 255 * mean) / (255 * std), channels first: images (B, 3, size, size)",
            "max_regions": settings.max_regions,
            "grid_size": settings.grid_size,
            "region_pooling": config.image.region_pooling,
            "regions": (
                "boxes (B, max_regions, 4) float32 [x1, y1, x2, y2] in pixels of the size x size input: box 0 is "
                "the whole image [0, 0, size, size]; then the image's own boxes (scaled from the original "
                "image, clipped to the input, at most max_regions - 1) or, without boxes, the grid_size x "
                "grid_size grid, row by row; the rest repeat box 0. box_mask (B, max_regions) bool marks the real boxes."
            ),
        },
        "text": {
            "file": TEXT_FILE,
            "tokenizer": f"{TOKENIZER_DIR}/tokenizer.json",
            "max_length": int(config.text.max_length),
            "truncation": "to max_length tokens including [CLS] and [SEP]",
            "pad_to_max_length": bool(config.text.language_model_sees_padding),
            "pad_id": int(tokenizer.pad_token_id or 0),
            "inputs": "input_ids (B, L) int64 padded with pad_id, attention_mask (B, L) int64 (1 for tokens)",
        },
        "checkpoint": identity,
    }


def _check_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
        raise UsageError(f"OUT_DIR {out_dir} already exists and is not an empty folder; give a new one.")


def _write_tokenizer(tokenizer, directory: Path) -> None:
    """The checkpoint's tokenizer files, with a tokenizer.json for the `tokenizers`
    library (what the runtime and non-Python consumers read)."""
    from ..models.tokenizer import save_tokenizer

    save_tokenizer(tokenizer, directory)
    target = directory / "tokenizer.json"
    if not target.exists():
        backend = getattr(tokenizer, "backend_tokenizer", None)
        if backend is None:
            raise ExportError("the checkpoint's tokenizer has no fast (tokenizers) form to write as tokenizer.json.")
        backend.save(str(target))


def _verification_records(dataset: str | None, data_dir: str | None, split: str, samples: int):
    """(records, texts, gold, source) the export is verified on: the first `samples`
    records of a dataset with their captions, or all None and "generated" without one
    (the verification then makes its own images and texts)."""
    if dataset is None:
        return None, None, None, "generated"
    from ..data.sources import load_records
    from ..eval.evaluate import query_table

    records = load_records(dataset, data_dir, split)[:samples]
    if not records:
        raise UsageError(f"--dataset {dataset} has no records in the split {split!r}.")
    texts, gold = query_table(records)
    return records, texts, gold, f"{dataset}/{split}"


def _move_into_place(work: Path, out_dir: Path) -> None:
    """Rename the verified bundle onto `out_dir` (an empty folder or none), with the
    permissions a folder made by mkdir would have: mkdtemp made it private."""
    if out_dir.exists():
        out_dir.rmdir()  # checked empty above
    os.replace(work, out_dir)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(out_dir, 0o777 & ~umask)


def export_onnx(
    checkpoint: str | Path,
    out_dir: str | Path,
    *,
    dataset: str | None = None,
    data_dir: str | None = None,
    split: str = "val",
    samples: int = 64,
    threshold: float = DEFAULT_THRESHOLD,
    batch_size: int = 16,
    on_step: Callable[[str], None] | None = None,
) -> ExportReport:
    """Export `checkpoint` to `out_dir` and prove it: on `samples` images and texts (the
    first records of `dataset`/`split`, with their captions, else generated ones) every
    row's cosine to PyTorch's must reach `threshold`, two onnxruntime runs must agree bit
    for bit, and on a dataset Recall@K must be PyTorch's. Raises ExportError naming the
    worst row otherwise; `out_dir` is then left as it was."""
    import torch

    from ..loading import load_checkpoint
    from ..search.index import checkpoint_identity
    from .graphs import OPSET, export_towers

    out_dir = Path(out_dir)
    if samples < 1:
        raise UsageError(f"--samples must be at least 1, not {samples}.")
    if not 0 < threshold <= 1:
        raise UsageError(f"--threshold must be in (0, 1], not {threshold}.")
    _check_out_dir(out_dir)
    step = on_step or (lambda _: None)
    records, texts, gold, source = _verification_records(dataset, data_dir, split, samples)
    step("loading the checkpoint")
    loaded = load_checkpoint(checkpoint, device=torch.device("cpu"))
    identity = checkpoint_identity(loaded.path)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        step("exporting the image and text towers")
        export_towers(loaded.model, loaded.config, work, IMAGE_FILE, TEXT_FILE)
        _write_tokenizer(loaded.tokenizer, work / TOKENIZER_DIR)
        info = describe(loaded, identity)
        info["exporter"] = {"torch": torch.__version__, "opset": OPSET, "python": platform.python_version()}
        (work / PREPROCESSING_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
        step(f"comparing with PyTorch on {'the first ' + str(len(records)) + ' records of ' + source if records else str(samples) + ' generated images and texts'}")
        parity = verify_bundle(loaded, load_bundle(work), records=records, texts=texts, gold=gold, source=source,
                               samples=samples, threshold=threshold, batch_size=batch_size)
        if not parity.ok:
            raise ExportError(f"the ONNX export does not reproduce {loaded.path}: {'; '.join(parity.problems)}. "
                              f"Nothing was written to {out_dir}.")
        info["verification"] = parity.to_json()
        (work / PREPROCESSING_FILE).write_text(json.dumps(info, ensure_ascii=False, indent=1), encoding="utf-8")
        files = sorted(p.relative_to(work).as_posix() for p in work.rglob("*") if p.is_file())
        _move_into_place(work, out_dir)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return ExportReport(out_dir=out_dir, parity=parity, files=files)

