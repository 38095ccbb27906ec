"""An exported ONNX bundle: two ONNX graphs, a tokenizer and the preprocessing JSON.

Layout of a bundle directory (written by `export.onnx.export_onnx`)::

    image.onnx          images (B, 3, S, S) float32, boxes (B, R, 4) float32 in input
                        pixels, box_mask (B, R) bool -> embeddings (B, D), L2-normalised
    text.onnx           input_ids (B, L) int64, attention_mask (B, L) int64 -> (B, D)
    tokenizer/          the checkpoint's tokenizer (tokenizer.json, vocab.txt, config)
    preprocessing.json  what a consumer must do before the graphs (see `describe` in
                        `export.onnx`), the source checkpoint's identity and the parity
                        measured when the bundle was verified

Only numpy, PIL, onnxruntime and tokenizers are imported here, so a deployment (or
`wenlan encode --backend onnx`) starts without torch.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from ..data.prepare import ImageSettings
from ..errors import CheckpointError, UsageError

PREPROCESSING_FILE = "preprocessing.json"
IMAGE_FILE = "image.onnx"
TEXT_FILE = "text.onnx"
TOKENIZER_DIR = "tokenizer"
FORMAT = "wenlan-onnx"
VERSION = 1


def is_bundle(directory: str | Path) -> bool:
    return (Path(directory) / PREPROCESSING_FILE).is_file()


def _import_onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise UsageError("the ONNX backend needs onnxruntime: pip install 'wenlan[onnx]'.") from None
    return onnxruntime


@dataclass
class OnnxBundle:
    """A loaded bundle; the onnxruntime sessions and the tokenizer are created on first use,
    so encoding only images never reads the text graph (and the reverse)."""

    directory: Path
    info: dict
    threads: int | None = None
    _sessions: dict = field(default_factory=dict, repr=False)
    _tokenizer: object = field(default=None, repr=False)

    @property
    def settings(self) -> ImageSettings:
        image = self.info["image"]
        return ImageSettings(
            image_size=int(image["size"]), max_regions=int(image["max_regions"]), grid_size=int(image["grid_size"]),
            mean=tuple(image["mean"]), std=tuple(image["std"]),
        )

    @property
    def embed_dim(self) -> int:
        return int(self.info["embed_dim"])

    @property
    def max_length(self) -> int:
        return int(self.info["text"]["max_length"])

    @property
    def pad_to_max_length(self) -> bool:
        return bool(self.info["text"]["pad_to_max_length"])

    @property
    def pad_id(self) -> int:
        return int(self.info["text"]["pad_id"])

    @property
    def checkpoint(self) -> dict:
        """The identity of the checkpoint the bundle was exported from."""
        return dict(self.info.get("checkpoint", {}))

    def session(self, tower: str):
        """The onnxruntime session of "image" or "text" (CPU)."""
        if tower not in self._sessions:
            ort = _import_onnxruntime()
            options = ort.SessionOptions()
            options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            if self.threads:
                options.intra_op_num_threads = self.threads
            path = self.directory / self.info[tower]["file"]
            try:
                self._sessions[tower] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            except Exception as exc:  # onnxruntime raises its own exception types for bad files
                raise CheckpointError(f"{path} is not a loadable ONNX graph ({type(exc).__name__}: {str(exc).splitlines()[0]}).") from None
        return self._sessions[tower]

    @property
    def tokenizer(self):
        """The checkpoint's tokenizer as a `tokenizers.Tokenizer`, truncating to max_length."""
        if self._tokenizer is None:
            from tokenizers import Tokenizer

            path = self.directory / self.info["text"]["tokenizer"]
            try:
                tokenizer = Tokenizer.from_file(str(path))
            except Exception as exc:
                raise CheckpointError(f"{path} is not a readable tokenizer.json ({exc}).") from None
            tokenizer.no_padding()
            tokenizer.enable_truncation(self.max_length)
            self._tokenizer = tokenizer
        return self._tokenizer


def load_bundle(directory: str | Path, threads: int | None = None) -> OnnxBundle:
    """Read a bundle directory written by `wenlan export onnx`, checking that its files exist."""
    directory = Path(directory)
    path = directory / PREPROCESSING_FILE
    if not directory.is_dir():
        raise UsageError(f"{directory} does not exist; make an ONNX bundle with `wenlan export onnx CHECKPOINT {directory}`.")
    if not path.is_file():
        raise UsageError(f"{directory} is not an ONNX bundle (no {PREPROCESSING_FILE}); make one with `wenlan export onnx`.")
    try:
        info = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not readable JSON ({exc}).") from None
    if not isinstance(info, dict) or info.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a wenlan ONNX bundle description (format {info.get('format') if isinstance(info, dict) else None!r}).")
    if info.get("version") != VERSION:
        raise CheckpointError(f"{path} has bundle version {info.get('version')!r}; this wenlan reads version {VERSION}.")
    try:
        files = [info["image"]["file"], info["text"]["file"], info["text"]["tokenizer"]]
        int(info["embed_dim"]), int(info["image"]["size"]), int(info["text"]["max_length"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path} lacks or garbles the field {exc}.") from None
    for name in files:
        if not (directory / name).is_file():
            raise CheckpointError(f"{directory / name} is missing; the bundle {directory} is incomplete (export it again).")
    return OnnxBundle(directory=directory, info=info, threads=threads)
