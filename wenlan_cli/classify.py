"""Zero-shot image classification with a trained BriVL.

Each label becomes a text vector by prompt ensembling, as in CLIP: the label is put
into every template (``"一张{}的照片"`` -> ``"一张红色的照片"``), each prompt is encoded and
L2-normalised, the prompt vectors of a label are averaged and the mean is
L2-normalised again. An image's score for a label is the cosine similarity of the
two vectors; ``probability`` is the softmax over all labels of score / temperature
(the model's training temperature). Top-k lists are ordered by descending score,
ties going to the label that comes first in the labels file.

    import wenlan_cli as wenlan
    from wenlan_cli.classify import classify, read_labels
    model, _, _ = wenlan.load("runs/demo")
    result = classify(model, ["a.jpg", "b.jpg"], read_labels("labels.txt"), k=3)
    for path, top in zip(result.paths, result.top()):
        print(path, top)          # [(label, score, probability), ...]

With images in one sub-folder per label (``root/红色/1.jpg``), `evaluate` reports
top-1 / top-5 accuracy overall and per class.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from .data.files import read_text
from .errors import DataError, UsageError

__all__ = [
    "ACCURACY_COLUMNS",
    "DEFAULT_TEMPLATES",
    "PREDICTION_COLUMNS",
    "Classification",
    "ClassifyInputs",
    "accuracy_rows",
    "check_templates",
    "classification_inputs",
    "classify",
    "evaluate",
    "folder_labels",
    "label_embeddings",
    "prediction_items",
    "prediction_rows",
    "read_labels",
]

# A small ensemble of everyday Chinese photo prompts; "{}" is replaced by the label.
DEFAULT_TEMPLATES: tuple[str, ...] = (
    "{}",
    "一张{}的照片",
    "一张{}的图片",
    "这是一张{}的照片",
    "图片里有{}",
)


def read_labels(path: str | Path) -> list[str]:
    """Labels of a UTF-8 file, one per line, stripped; blank lines are ignored and a
    repeated label is an error naming both lines."""
    path = Path(path)
    text = read_text(path, "the labels file ")
    labels: list[str] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), 1):
        label = line.strip()
        if not label:
            continue
        if label in first_line:
            raise DataError(
                f"the labels file {path} repeats the label {label!r} on line {number} (first on line "
                f"{first_line[label]}); each label must appear once."
            )
        first_line[label] = number
        labels.append(label)
    if not labels:
        raise DataError(f"the labels file {path} holds no labels (one per line).")
    return labels


def check_templates(templates: Sequence[str] | None) -> list[str]:
    """The templates to use (the defaults when none are given); each must hold one "{}"."""
    if not templates:
        return list(DEFAULT_TEMPLATES)
    for template in templates:
        if template.count("{}") != 1:
            raise UsageError(f"--template {template!r} must contain {{}} exactly once, where the label goes.")
    return list(templates)


def _fill(template: str, label: str) -> str:
    return template.replace("{}", label)


@torch.no_grad()
def label_embeddings(
    model, labels: Sequence[str], templates: Sequence[str] | None = None, batch_size: int = 256
) -> torch.Tensor:
    """(len(labels), D) unit vectors: per label, the renormalised mean of its
    L2-normalised prompt vectors, one prompt per template. `model` is what
    `wenlan_cli.load` returns (anything with `encode_text(list_of_str) -> (B, D)`)."""
    templates = check_templates(templates)
    if not labels:
        raise UsageError("no labels to classify into.")
    prompts = [_fill(t, label) for label in labels for t in templates]  # label-major
    chunks = [model.encode_text(prompts[i : i + batch_size]).float().cpu() for i in range(0, len(prompts), batch_size)]
    vectors = F.normalize(torch.cat(chunks), dim=-1).view(len(labels), len(templates), -1)
    return F.normalize(vectors.mean(dim=1), dim=-1)


@dataclass
class Classification:
    paths: list[Path]  # the images that were read, in input order
    labels: list[str]
    scores: torch.Tensor  # (N, L) cosine similarities
    probabilities: torch.Tensor  # (N, L) softmax(scores / temperature) over the labels
    top_scores: torch.Tensor  # (N, k), best first
    top_indices: torch.Tensor  # (N, k) label indices
    failures: list[tuple[Path, str]] = field(default_factory=list)  # unreadable images, left out

    def top(self) -> list[list[tuple[str, float, float]]]:
        """Per image: [(label, score, probability), ...] best first."""
        out = []
        for i, (scores, indices) in enumerate(zip(self.top_scores.tolist(), self.top_indices.tolist())):
            out.append([(self.labels[j], s, float(self.probabilities[i, j])) for s, j in zip(scores, indices)])
        return out


def classify(
    model,
    images: Sequence[str | Path],
    labels: Sequence[str],
    templates: Sequence[str] | None = None,
    k: int = 5,
    *,
    label_vectors: torch.Tensor | None = None,
    batch_size: int = 64,
    workers: int = 0,
    skip_bad: bool = False,
    precision: str = "fp32",
    on_batch: Callable[[int], None] | None = None,
) -> Classification:
    """Score every image against every label and keep the top `k` (at most the number
    of labels). `model` comes from `wenlan_cli.load`; `label_vectors` may be passed
    precomputed by `label_embeddings`. An unreadable image raises DataError unless
    `skip_bad` leaves it out (listed in `failures`)."""
    from .data.records import ImageTextRecord
    from .encode import encode_images
    from .search.topk import search_vectors

    if isinstance(k, bool) or k < 1:
        raise UsageError(f"-k must be at least 1, not {k}.")
    if label_vectors is None:
        label_vectors = label_embeddings(model, labels, templates)
    if label_vectors.shape[0] != len(labels):
        raise ValueError(f"label_vectors has {label_vectors.shape[0]} rows for {len(labels)} labels")
    paths = [Path(p) for p in images]
    records = [ImageTextRecord(image_id=str(p), image_path=p, captions=[]) for p in paths]
    encoding = encode_images(model.brivl, records, model.settings, device=model.device, batch_size=batch_size,
                             workers=workers, skip_bad=skip_bad, precision=precision, on_batch=on_batch)
    image_vectors = F.normalize(encoding.embeddings.float(), dim=-1)
    label_vectors = label_vectors.float().cpu()
    scores = image_vectors @ label_vectors.T
    temperature = float(getattr(getattr(model.brivl, "config", None), "temperature", 0.07) or 0.07)
    probabilities = torch.softmax(scores / temperature, dim=1)
    if image_vectors.shape[0]:
        top_scores, top_indices = search_vectors(image_vectors, label_vectors, k)
    else:
        top_scores = torch.zeros(0, min(k, len(labels)))
        top_indices = torch.zeros(0, min(k, len(labels)), dtype=torch.long)
    return Classification(
        paths=[paths[i] for i in encoding.kept], labels=list(labels), scores=scores, probabilities=probabilities,
        top_scores=top_scores, top_indices=top_indices, failures=[(paths[i], m) for i, m in encoding.failures],
    )


def folder_labels(root: str | Path, paths: Sequence[str | Path]) -> list[str]:
    """The label of each image in a one-folder-per-label layout: its first folder under `root`."""
    root = Path(root)
    out = []
    for path in paths:
        parts = Path(path).relative_to(root).parts
        if len(parts) < 2:
            raise DataError(
                f"{path} lies directly in {root}; for --eval every image must sit in a sub-folder named after its label."
            )
        out.append(parts[0])
    return out


def gold_ranks(scores: torch.Tensor, gold: torch.Tensor) -> torch.Tensor:
    """0-based rank of each row's gold label: #(score > gold) + #(score == gold, earlier label)."""
    gold_scores = scores.gather(1, gold[:, None])
    earlier = torch.arange(scores.shape[1])[None, :] < gold[:, None]
    return (scores > gold_scores).sum(1) + ((scores == gold_scores) & earlier).sum(1)


def evaluate(result: Classification, gold_labels: Sequence[str]) -> dict:
    """Top-1 / top-5 accuracy (percent) of `result` against the gold label of each of
    its images (`result.paths` order), overall and per class (label-file order)."""
    index = {label: i for i, label in enumerate(result.labels)}
    unknown = [g for g in gold_labels if g not in index]
    if unknown:
        raise DataError(f"the folder {unknown[0]!r} is not one of the labels; name each folder after a label in the labels file.")
    if len(gold_labels) != len(result.paths):
        raise ValueError(f"{len(gold_labels)} gold labels for {len(result.paths)} images")
    if not gold_labels:
        raise DataError("no readable images to evaluate.")
    gold = torch.tensor([index[g] for g in gold_labels], dtype=torch.long)
    ranks = gold_ranks(result.scores, gold)
    per_class = []
    for i, label in enumerate(result.labels):
        mine = ranks[gold == i]
        if mine.numel() == 0:
            continue
        top1, top5 = int((mine < 1).sum()), int((mine < 5).sum())
        per_class.append({
            "label": label, "images": int(mine.numel()), "top1_correct": top1, "top5_correct": top5,
            "top1": 100.0 * top1 / mine.numel(), "top5": 100.0 * top5 / mine.numel(),
        })
    n = len(gold_labels)
    top1, top5 = int((ranks < 1).sum()), int((ranks < 5).sum())
    return {
        "top1": 100.0 * top1 / n, "top5": 100.0 * top5 / n, "images": n, "top1_correct": top1, "top5_correct": top5,
        "labels": len(result.labels), "per_class": per_class,
        "skipped": [{"path": str(p), "error": m} for p, m in result.failures],
    }


@dataclass
class ClassifyInputs:
    """What `wenlan classify` runs on: the image files, the labels and, with --eval, the
    gold label (sub-folder name) of each image."""

    paths: list[Path]
    labels: list[str]
    gold: dict[Path, str] | None = None

    def gold_of(self, paths: Sequence[Path]) -> list[str]:
        """The gold labels of `paths` (the images a Classification kept), in their order."""
        return [self.gold[p] for p in paths]


def classification_inputs(images: Sequence[str | Path], labels_file: str | Path | None, evaluate: bool) -> ClassifyInputs:
    """The images under `images` and the labels of `labels_file`; with `evaluate`, `images`
    is one folder of sub-folders named after the labels (which default to those names)."""
    from .data.imagefiles import collect_image_paths

    images = [Path(p) for p in images]
    if evaluate and (len(images) != 1 or not images[0].is_dir()):
        raise UsageError("--eval takes one folder holding a sub-folder of images per label.")
    if not evaluate and labels_file is None:
        raise UsageError("give --labels FILE (one label per line).")
    paths = collect_image_paths(images)
    if not paths:
        raise DataError(f"no images (jpg, png, webp, bmp) found in {', '.join(map(str, images))}.")
    if not evaluate:
        return ClassifyInputs(paths, read_labels(labels_file))
    gold = folder_labels(images[0], paths)
    labels = read_labels(labels_file) if labels_file is not None else sorted(set(gold))
    return ClassifyInputs(paths, labels, dict(zip(paths, gold)))


def prediction_items(result: Classification) -> list[dict]:
    """Per image, its path and ranked predictions (what `--json` writes)."""
    return [{"path": str(p), "predictions": [{"rank": r, "label": label, "score": s, "probability": prob}
                                             for r, (label, s, prob) in enumerate(preds, 1)]}
            for p, preds in zip(result.paths, result.top())]


def prediction_rows(result: Classification) -> list[list]:
    """One row per image and rank: path, rank, label, score, probability (what `--csv` writes)."""
    return [[str(p), r, label, f"{s:.6f}", f"{prob:.6f}"]
            for p, preds in zip(result.paths, result.top()) for r, (label, s, prob) in enumerate(preds, 1)]


def accuracy_rows(report: dict) -> list[list]:
    """One row per class of an `evaluate` report, then "(all)" (what `--eval --csv` writes)."""
    rows = [[c[col] for col in ACCURACY_COLUMNS] for c in report["per_class"]]
    rows.append(["(all)", *(report[col] for col in ACCURACY_COLUMNS[1:])])
    return rows


PREDICTION_COLUMNS = ["path", "rank", "label", "score", "probability"]
ACCURACY_COLUMNS = ["label", "images", "top1_correct", "top5_correct", "top1", "top5"]
