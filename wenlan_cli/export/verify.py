"""Proof that an exported bundle reproduces the PyTorch model before it is published.

Both sides run their whole path: the PyTorch side the data pipeline and the model of
the checkpoint, the ONNX side the bundle's own preprocessing (`runtime.encode`: PIL +
numpy, the tokenizer.json) and onnxruntime. Every row's cosine must reach the
threshold, a second ONNX run must give bit-identical vectors, and on a dataset the
Recall@K of the ONNX vectors must equal PyTorch's.
"""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..data.records import ImageTextRecord

RECALL_KEYS = ("t2i_r1", "t2i_r5", "t2i_r10", "i2t_r1", "i2t_r5", "i2t_r10")


@dataclass
class TowerParity:
    """One tower's agreement: the worst row, its name (a path or a text) and its cosine."""

    tower: str
    rows: int
    worst_row: int
    worst_name: str
    worst_cosine: float
    repeatable: bool  # a second onnxruntime run gave the same bits

    def to_json(self) -> dict:
        return {"rows": self.rows, "worst_row": self.worst_row, "worst_cosine": self.worst_cosine, "repeatable": self.repeatable}


@dataclass
class ParityReport:
    threshold: float
    image: TowerParity
    text: TowerParity
    source: str  # "generated" or "DATASET/SPLIT"
    recall_torch: dict | None = None
    recall_onnx: dict | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict:
        data = {"source": self.source, "threshold": self.threshold, "image": self.image.to_json(), "text": self.text.to_json()}
        if self.recall_torch is not None:
            data["recall_torch"] = {k: self.recall_torch[k] for k in RECALL_KEYS}
            data["recall_onnx"] = {k: self.recall_onnx[k] for k in RECALL_KEYS}
        return data


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of each row pair, in float64 (a row of zeros or non-finite values gets -1)."""
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    norms = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = (a64 * b64).sum(axis=1) / norms
    return np.where(np.isfinite(cos), cos, -1.0)


def _tower(tower: str, torch_vectors: np.ndarray, onnx_vectors: np.ndarray, again: np.ndarray, names: Sequence[str]) -> TowerParity:
    cos = row_cosines(torch_vectors, onnx_vectors)
    worst = int(np.argmin(cos))
    return TowerParity(tower, len(cos), worst, str(names[worst]), float(cos[worst]),
                       bool(np.array_equal(onnx_vectors, again)))


def generated_records(directory: Path, settings, count: int, seed: int = 0) -> list[ImageTextRecord]:
    """`count` PNG images of varied sizes and content written under `directory`: smooth
    colour fields with rectangles and noise; every other one with random boxes (some of
    them past the edge, more than max_regions on some), the rest on the grid."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    records = []
    for i in range(count):
        w, h = (int(v) for v in rng.integers(24, 3 * settings.image_size, size=2))
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(xx * rng.uniform(0.1, 3) + yy * rng.uniform(0.1, 3) + rng.uniform(0, 255)) % 256 for _ in range(3)], -1)
        for _ in range(int(rng.integers(1, 5))):
            x1, y1 = int(rng.integers(0, w)), int(rng.integers(0, h))
            base[y1 : y1 + int(rng.integers(4, h + 5)), x1 : x1 + int(rng.integers(4, w + 5))] = rng.integers(0, 256, 3)
        pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        path = directory / f"generated_{i:04d}.png"
        Image.fromarray(pixels, "RGB").save(path)
        boxes = None
        if i % 2 == 0:
            n = int(rng.integers(1, settings.max_regions + 3))
            corners = rng.uniform(-0.1, 1.0, size=(n, 2)) * [w, h]
            sizes = rng.uniform(0.05, 0.8, size=(n, 2)) * [w, h]
            boxes = np.concatenate([corners, corners + sizes], axis=1).round(1).tolist()
        records.append(ImageTextRecord(image_id=path.name, image_path=path, captions=[], boxes=boxes))
    return records


def generated_texts(tokenizer, count: int, max_length: int, seed: int = 0) -> list[str]:
    """`count` texts drawn from the tokenizer's own characters (CJK, Latin, digits,
    punctuation), from empty to longer than max_length (so truncation is exercised)."""
    rng = np.random.default_rng(seed + 1)
    vocab = [t for t in tokenizer.get_vocab() if len(t) == 1 and not t.isspace()]
    vocab = sorted(vocab) or list("一二三四五六七八九十")
    texts = []
    for i in range(count):
        n = int(rng.integers(0, max_length + 12)) if i else 0
        texts.append("".join(vocab[j] for j in rng.integers(0, len(vocab), size=n)))
    return texts


def verify_bundle(loaded, bundle, *, records: Sequence[ImageTextRecord] | None = None, texts: Sequence[str] | None = None,
                  gold=None, source: str = "generated", samples: int = 64, threshold: float = 0.9999,
                  batch_size: int = 16, seed: int = 0) -> ParityReport:
    """Compare `bundle` with `loaded` (a `loading.LoadedModel`) on `records` / `texts`, or
    on `samples` generated images and texts when none are given. `gold` (the texts'
    image indices) turns on the Recall@K comparison."""
    import torch

    from ..encode import encode_images as torch_images
    from ..encode import encode_texts as torch_texts
    from ..runtime.encode import encode_images as onnx_images
    from ..runtime.encode import encode_texts as onnx_texts

    with tempfile.TemporaryDirectory(prefix="wenlan-export-check-") as tmp:
        if records is None:
            records = generated_records(Path(tmp), loaded.settings, samples, seed)
        if not texts:  # none given, or a split without captions: generated ones (no recall then)
            texts, gold = generated_texts(loaded.tokenizer, samples, loaded.config.text.max_length, seed), None
        cpu = torch.device("cpu")
        reference = torch_images(loaded.model, records, loaded.settings, device=cpu, batch_size=batch_size)
        first = onnx_images(bundle, records, batch_size=batch_size)
        second = onnx_images(bundle, records, batch_size=batch_size)
    ref_texts = torch_texts(loaded.model, loaded.tokenizer, texts, device=cpu, max_length=loaded.config.text.max_length,
                            batch_size=batch_size).numpy()
    onnx_t = onnx_texts(bundle, texts, batch_size=batch_size)
    onnx_t2 = onnx_texts(bundle, texts, batch_size=batch_size)
    image = _tower("image", reference.embeddings.numpy(), first.embeddings, second.embeddings, [r.image_id for r in records])
    text = _tower("text", ref_texts, onnx_t, onnx_t2, [repr(t) for t in texts])
    report = ParityReport(threshold, image, text, source)
    for part in (image, text):
        if part.worst_cosine < threshold:
            report.problems.append(
                f"{part.tower} row {part.worst_row} ({part.worst_name}) has cosine {part.worst_cosine:.6f} to PyTorch's "
                f"vector, below {threshold}")
        if not part.repeatable:
            report.problems.append(f"two onnxruntime runs of the {part.tower} tower gave different vectors")
    if gold is not None and report.ok:
        from ..eval.retrieval import retrieval_metrics

        report.recall_torch = retrieval_metrics(reference.embeddings, torch.from_numpy(ref_texts), gold)
        report.recall_onnx = retrieval_metrics(torch.from_numpy(first.embeddings), torch.from_numpy(onnx_t), gold)
        differ = [k for k in RECALL_KEYS if report.recall_torch[k] != report.recall_onnx[k]]
        if differ:
            k = differ[0]
            report.problems.append(f"Recall@K differs ({k}: ONNX {report.recall_onnx[k]:.2f}, PyTorch {report.recall_torch[k]:.2f})")
    return report
