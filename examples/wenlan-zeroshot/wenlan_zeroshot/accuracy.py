"""Zero-shot accuracy on a folder-per-label image set (`root/红色/1.jpg`: label 红色).

The labels are the sub-folder names, sorted; each becomes a text vector by the core's
prompt ensembling, each image is scored against every label, and an image counts as
right at top-k when its folder's label is among its k best. The numbers are those of
`wenlan classify --eval` on the same folder, plus the mean of the per-class top-1
(which a set with unequal classes needs to be read fairly).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from wenlan_cli.plugin_api import (
    UsageError,
    check_templates,
    collect_image_paths,
    folder_labels,
    label_embeddings,
    zero_shot_accuracy,
    zero_shot_classify,
)


def labelled_images(data_dir: str | Path) -> tuple[list[Path], list[str]]:
    """The images under `data_dir` and the label of each (its sub-folder's name). A folder
    that is missing, holds loose images or has fewer than two labels is a usage error."""
    root = Path(data_dir)
    if not root.is_dir():
        raise UsageError(f"DATA_DIR {root} is not a folder; give a folder with one sub-folder of images per label.")
    paths = collect_image_paths([root])
    loose = [p for p in paths if p.parent == root]
    if loose:
        raise UsageError(f"DATA_DIR {root} holds the image {loose[0].name} directly; put every image in a sub-folder named after its label.")
    labels = folder_labels(root, paths)
    if len(set(labels)) < 2:
        raise UsageError(f"DATA_DIR {root} has images under {len(set(labels))} label folder(s); accuracy needs at least two (jpg, png, webp, bmp).")
    return paths, labels


def folder_accuracy(
    model,
    data_dir: str | Path,
    *,
    templates: Sequence[str] | None = None,
    batch_size: int = 64,
    skip_bad: bool = False,
    on_batch: Callable[[int], None] | None = None,
) -> dict:
    """Top-1 / top-5 accuracy (percent) of `model` (from `wenlan_cli.plugin_api.load`) on
    `data_dir`, overall and per class, with the mean per-class top-1 and the templates used."""
    paths, gold = labelled_images(data_dir)
    labels = sorted(set(gold))
    templates = check_templates(templates)
    vectors = label_embeddings(model, labels, templates)
    result = zero_shot_classify(model, paths, labels, k=min(5, len(labels)), label_vectors=vectors,
                                batch_size=batch_size, skip_bad=skip_bad, on_batch=on_batch)
    label_of = dict(zip(paths, gold))
    report = zero_shot_accuracy(result, [label_of[p] for p in result.paths])
    report["mean_class_top1"] = sum(c["top1"] for c in report["per_class"]) / len(report["per_class"])
    report["templates"] = templates
    return report
