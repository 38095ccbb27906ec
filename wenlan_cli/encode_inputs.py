"""What `wenlan encode` does below its command line: gather the inputs (image files or
folders, a texts file, or a dataset split), encode them with a backend (`backends.py`) and
describe the result in a manifest (where the vectors come from, the row order, what was
skipped). The command (`cli/encode.py`) adds the option checks, the progress bar and the
files; tests and the Python API call these directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class EncodeInputs:
    """What `wenlan encode` encodes: texts, or images (paths, or a dataset's records)."""

    items: list  # texts, or image paths
    texts: bool
    records: list | None = None  # a dataset's records (their boxes are used)
    caption_images: list | None = None  # --captions: the image of each caption
    not_files: list = field(default_factory=list)  # {"path", "reason"} of arguments that are not image files


def collect_inputs(paths, texts, dataset, data_dir, split, captions) -> EncodeInputs:
    """The items of one of: image files/folders, a texts file, a dataset split (its images,
    or with `captions` its captions)."""
    from .data.files import read_text_lines
    from .data.imagefiles import collect_image_paths

    if dataset is not None:
        from .data.sources import load_records

        records = load_records(dataset, data_dir, split)
        if captions:
            found = EncodeInputs([c for r in records for c in r.captions], True, records,
                                 [r.image_id for r in records for _ in r.captions])
        else:
            found = EncodeInputs([r.image_path for r in records], False, records)
    elif texts is not None:
        found = EncodeInputs(read_text_lines(texts), True)
    else:
        not_files: list = []
        items = collect_image_paths(paths, skipped=not_files)
        found = EncodeInputs(items, False, not_files=[{"path": str(p), "reason": reason} for p, reason in not_files])
    return found


def encode_inputs(encoder, inputs: EncodeInputs, *, batch_size: int, workers: int, skip_bad: bool, on_batch=None):
    """(float32 array, manifest rows, skipped entries) of `inputs` through `encoder` (a
    `backends.py` backend). Rows are texts, image paths or a dataset's image ids; skipped
    entries are the images that failed (with `skip_bad`) and the arguments that were not
    image files. `on_batch(n)` is called after each batch of n items."""
    import numpy as np

    from .data.records import ImageTextRecord

    listed = [{"path": e["path"], "error": f"{e['path']}: skipped, {e['reason']}"} for e in inputs.not_files]
    if inputs.texts:
        vectors = encoder.encode_texts(inputs.items, batch_size=batch_size, on_batch=on_batch)
        rows, skipped = inputs.items, []
    else:
        records = inputs.records or [ImageTextRecord(image_id=str(p), image_path=p, captions=[]) for p in inputs.items]
        vectors, kept, failures = encoder.encode_images(
            records, batch_size=batch_size, workers=workers, skip_bad=skip_bad, on_batch=on_batch,
        )
        rows = [str(inputs.items[i]) if inputs.records is None else records[i].image_id for i in kept]
        skipped = [{"path": str(inputs.items[i]), "error": message} for i, message in failures] + listed
    return np.ascontiguousarray(vectors, dtype=np.float32), rows, skipped


def manifest_of(checkpoint, backend: str, inputs: EncodeInputs, shape, rows, skipped, *, dataset=None, split=None) -> dict:
    """The manifest beside the .npy: where the vectors come from and the row order."""
    return {
        "checkpoint": str(checkpoint),
        **({"backend": "onnx"} if backend == "onnx" else {}),
        "kind": "text" if inputs.texts else "image",
        "shape": list(shape),
        "rows": rows,
        **({"dataset": dataset, "split": split} if dataset else {}),
        **({"caption_images": inputs.caption_images} if inputs.caption_images is not None else {}),
        "skipped": skipped,
    }


def manifest_file(output: Path | None, manifest: Path | None) -> Path | None:
    """Where the manifest goes: `manifest` when given, else beside `output` (none for stdout)."""
    return manifest or (output.with_suffix(".manifest.json") if output is not None else None)
