"""Small JPEG thumbnails of indexed images, made on demand and kept in a bounded cache.

The cache key includes the file's size and mtime, so an image replaced on disk is
re-read; at most `entries` thumbnails (a few KB each) stay in memory.
"""

from __future__ import annotations

import io
import threading
from collections import OrderedDict
from pathlib import Path

from PIL import Image

from ..data.images import load_image

__all__ = ["ThumbnailCache"]


class ThumbnailCache:
    def __init__(self, size: int = 256, entries: int = 512, max_pixels: int = 40_000_000) -> None:
        self.size = size
        self.entries = entries
        self.max_pixels = max_pixels
        self._cache: OrderedDict[tuple, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, path: Path) -> bytes:
        """JPEG bytes (longest side `size`); raises DataError when the file cannot be decoded."""
        stat = path.stat()
        key = (str(path), stat.st_size, stat.st_mtime_ns)
        with self._lock:
            if key in self._cache:
                self._cache.move_to_end(key)
                return self._cache[key]
        image = load_image(path, max_pixels=self.max_pixels)
        image.thumbnail((self.size, self.size), Image.BILINEAR)
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=85)
        data = buffer.getvalue()
        with self._lock:
            self._cache[key] = data
            while len(self._cache) > self.entries:
                self._cache.popitem(last=False)
        return data
