"""The Python API: load a checkpoint, embed images and texts, rank them.

    python examples/python_api.py runs/demo IMAGE [IMAGE ...]

Prints, for a few Chinese descriptions, which of the given images matches best.
"""

from __future__ import annotations

import sys

import torch

import wenlan_cli as wenlan

QUERIES = ["左上角有两个红色的圆形", "一个蓝色的三角形在中间", "右下方有三个黄色的星星"]


def main(checkpoint: str, paths: list[str]) -> None:
    print("architectures:", ", ".join(wenlan.list_models()))
    model, preprocess, tokenizer = wenlan.load(checkpoint)
    images = torch.stack([preprocess(path) for path in paths])
    image_vectors = model.encode_image(images)  # (N, D), L2-normalised
    text_vectors = model.encode_text(QUERIES)  # tokenised with the checkpoint's tokenizer
    scores = text_vectors @ image_vectors.T
    for query, row in zip(QUERIES, scores):
        best = int(row.argmax())
        print(f"{query}  ->  {paths[best]}  ({row[best]:.3f})")


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2:])
