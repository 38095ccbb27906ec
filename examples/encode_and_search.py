"""Encode a folder of images with `wenlan encode`, then search it with a Chinese query.

    python examples/encode_and_search.py --checkpoint runs/demo --images IMAGE_DIR \
        --query "左上角有两个红色圆形"

The image vectors and their manifest are written next to `--work` so a second search
reuses them. Vectors are L2-normalised, so a dot product is the cosine similarity.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np


def wenlan(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "wenlan_cli", *args], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="checkpoint or run directory")
    parser.add_argument("--images", required=True, help="folder of images to search")
    parser.add_argument("--query", action="append", required=True, help="Chinese text query (repeatable)")
    parser.add_argument("--work", default="runs/search", help="where vectors and manifests go")
    parser.add_argument("-k", type=int, default=5, help="results per query")
    args = parser.parse_args()

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    images_npy = work / "images.npy"
    if not images_npy.exists():
        wenlan("encode", args.images, "--checkpoint", args.checkpoint, "-o", str(images_npy))
    queries_txt = work / "queries.txt"
    queries_txt.write_text("\n".join(args.query) + "\n", encoding="utf-8")
    wenlan("encode", "--texts", str(queries_txt), "--checkpoint", args.checkpoint, "-o", str(work / "queries.npy"))

    image_vectors = np.load(images_npy)
    paths = json.loads((work / "images.manifest.json").read_text(encoding="utf-8"))["rows"]
    query_vectors = np.load(work / "queries.npy")
    scores = query_vectors @ image_vectors.T
    for query, row in zip(args.query, scores):
        print(f"\n{query}")
        for rank, index in enumerate(np.argsort(-row, kind="stable")[: args.k], start=1):
            print(f"  {rank}. {row[index]:.3f}  {paths[index]}")


if __name__ == "__main__":
    main()
