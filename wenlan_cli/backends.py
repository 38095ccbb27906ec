"""One interface over the two ways to run a model: PyTorch on a checkpoint, or
onnxruntime on a bundle of `wenlan export onnx`.

`encode` and `index` ask for a backend by name and get numpy vectors either way. The
ONNX backend imports neither torch nor transformers (`runtime`), so a deployment
that only encodes starts in a fraction of the time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from .data.records import ImageTextRecord
from .errors import UsageError

BACKENDS = ("torch", "onnx")


def check_backend(backend: str) -> str:
    if backend not in BACKENDS:
        raise UsageError(f"--backend must be torch or onnx, not {backend!r}.")
    return backend


def check_onnx_options(*, device: str, precision: str, batch_size: int | None = None, workers: int | None = None) -> None:
    """The options `--backend onnx` accepts: onnxruntime runs fp32 on the CPU here."""
    from .config import check_number

    check_number("--batch-size", batch_size, 1, integer=True)
    check_number("--workers", workers, 0, 256, integer=True)
    if device not in ("auto", "cpu"):
        raise UsageError(f"--backend onnx runs on the CPU; --device {device} is for --backend torch.")
    if precision != "fp32":
        raise UsageError(f"--backend onnx runs in fp32; --precision {precision} is for --backend torch.")


class TorchBackend:
    """A checkpoint's towers in PyTorch (`wenlan_cli.encode`)."""

    name = "torch"

    def __init__(self, checkpoint: str | Path, device, precision: str = "fp32") -> None:
        from .loading import load_checkpoint

        self.loaded = load_checkpoint(checkpoint, device=device)
        self.device = device
        self.precision = precision
        self.path = self.loaded.path

    def encode_texts(self, texts: Sequence[str], *, batch_size: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        from .encode import encode_texts

        loaded = self.loaded
        vectors = encode_texts(loaded.model, loaded.tokenizer, texts, device=self.device, max_length=loaded.config.text.max_length,
                               batch_size=batch_size, precision=self.precision, on_batch=on_batch)
        return np.ascontiguousarray(vectors.numpy(), dtype=np.float32)

    def encode_images(self, records: Sequence[ImageTextRecord], *, batch_size: int, workers: int = 0, skip_bad: bool = False,
                      on_batch: Callable[[int], None] | None = None):
        """(vectors (kept, D) float32, kept record indices, [(index, message)] of unreadable images)."""
        from .encode import encode_images

        result = encode_images(self.loaded.model, records, self.loaded.settings, device=self.device, batch_size=batch_size,
                               workers=workers, skip_bad=skip_bad, precision=self.precision, on_batch=on_batch)
        return np.ascontiguousarray(result.embeddings.float().numpy()), result.kept, result.failures


class OnnxBackend:
    """A bundle's graphs on onnxruntime (`runtime`); torch is never imported."""

    name = "onnx"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None) -> None:
        from .runtime.bundle import load_bundle

        self.bundle = load_bundle(bundle_dir, threads=threads)
        self.path = self.bundle.directory.resolve()

    def encode_texts(self, texts: Sequence[str], *, batch_size: int, on_batch: Callable[[int], None] | None = None) -> np.ndarray:
        from .runtime.encode import encode_texts

        return encode_texts(self.bundle, texts, batch_size=batch_size, on_batch=on_batch)

    def encode_images(self, records: Sequence[ImageTextRecord], *, batch_size: int, workers: int = 0, skip_bad: bool = False,
                      on_batch: Callable[[int], None] | None = None):
        from .runtime.encode import encode_images

        result = encode_images(self.bundle, records, batch_size=batch_size, workers=workers, skip_bad=skip_bad, on_batch=on_batch)
        return result.embeddings, result.kept, result.failures


def open_backend(backend: str, checkpoint: str | Path, *, device=None, precision: str = "fp32"):
    """`TorchBackend` of a checkpoint or `OnnxBackend` of a bundle directory."""
    if check_backend(backend) == "onnx":
        return OnnxBackend(checkpoint)
    return TorchBackend(checkpoint, device, precision)
