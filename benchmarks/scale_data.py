"""An AIC-ICC-layout dataset of any size, made in seconds: one small JPEG hard-linked N times.

The scale benchmark (benchmarks/scale.py) needs annotation files of the real AIC-ICC size
(210,000 images x 5 captions) and beyond (1M) without writing a million JPEGs: every
image name is a hard link to one 128 x 96 JPEG (a fresh copy every LINKS_PER_FILE names,
since ext4 allows 65,000 links to a file), so the folder costs a directory entry per
image and almost no data. Captions are drawn from 3,000 common CJK characters (AIC-ICC's
captions use about that many), 10-30 characters each, 5 per image, and an entry carries
the release's `url` field, so reading and tokenising cost what they cost on the release.

    python benchmarks/scale_data.py OUT --images 210000

writes OUT/ai_challenger_caption_train_20170902/ and a 64-image validation release.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np

from wenlan_cli.data.aic_icc import AIC_SPLITS

CHARS = 3000  # distinct characters the captions use
CAPTIONS = 5
LINKS_PER_FILE = 60_000


def _jpeg_bytes() -> bytes:
    import io

    from _images import photo_like

    buffer = io.BytesIO()
    photo_like(0, width=128, height=96).save(buffer, format="JPEG", quality=85)
    return buffer.getvalue()


def _captions(rng: np.random.Generator, count: int) -> list[str]:
    """`count` captions of 10-30 characters from the CJK block's first CHARS code points,
    drawn with a Zipf-like skew (a few characters common, most rare, as in real text)."""
    lengths = rng.integers(10, 31, count)
    weights = 1.0 / np.arange(1, CHARS + 1)
    codes = rng.choice(CHARS, size=int(lengths.sum()), p=weights / weights.sum()) + 0x4E00
    text = codes.astype("<u4").tobytes().decode("utf-32-le")
    ends = np.cumsum(lengths)
    starts = ends - lengths
    return [text[s:e] for s, e in zip(starts.tolist(), ends.tolist())]


def write_split(root: Path, split: str, images: int, seed: int, jpeg: Path) -> Path:
    """One AIC-ICC release folder with `images` entries over hard links to `jpeg`."""
    names = AIC_SPLITS[split]
    release = root / names.release
    image_dir = release / names.images
    image_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    captions = _captions(rng, images * CAPTIONS)
    entries = []
    data = jpeg.read_bytes()
    for i in range(images):
        image_id = f"{seed:02x}{i:012x}.jpg"
        if i % LINKS_PER_FILE == 0:
            source = release / f"source-{i // LINKS_PER_FILE}.jpg"
            source.write_bytes(data)
        os.link(source, image_dir / image_id)
        entries.append({
            "url": f"http://img.example.com/{image_id}",
            "image_id": image_id,
            "caption": captions[i * CAPTIONS : (i + 1) * CAPTIONS],
        })
    path = release / names.annotations
    path.write_text(json.dumps(entries, ensure_ascii=False), encoding="utf-8")
    return path


def make_dataset(root: Path, images: int, val_images: int = 64, seed: int = 0) -> Path:
    """A fresh dataset at `root` (replacing what is there): train with `images` entries,
    val with `val_images`. Returns `root`."""
    root = Path(root)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    jpeg = root / "image.jpg"
    jpeg.write_bytes(_jpeg_bytes())
    write_split(root, "train", images, seed, jpeg)
    write_split(root, "val", val_images, seed + 1, jpeg)
    return root


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--images", type=int, default=210_000)
    parser.add_argument("--val-images", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    make_dataset(args.out, args.images, args.val_images, args.seed)
    print(args.out)


if __name__ == "__main__":
    main()
