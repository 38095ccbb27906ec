"""Generated test images shared by the data and encode benchmarks."""

from __future__ import annotations


def photo_like(seed: int, width: int = 640, height: int = 480):
    """A 640x480 image with photo-like JPEG statistics (not the content of a photo): smooth
    colour fields, mid-frequency blotches and sensor-like noise, so decoding and the
    downscale to the model's input cost what they cost on real photos."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)).resize((width, height), Image.BICUBIC)
    mid = Image.fromarray(rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)).resize((width, height), Image.BILINEAR)
    pixels = 0.6 * np.asarray(low, dtype=np.float32) + 0.4 * np.asarray(mid, dtype=np.float32)
    pixels += rng.normal(0.0, 6.0, pixels.shape).astype(np.float32)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
