"""Decode images safely: RGB out, or a DataError naming the file and the problem.

Decoding is by content, not by extension (a PNG named ``.jpg`` loads).
Conversions to RGB:

* EXIF orientation is applied first (`ImageOps.exif_transpose`), so the
  image is the one a viewer displays. **Region boxes are in the coordinates
  of this displayed image**: `load_image(p).size` and `image_size(p)` are the
  post-EXIF (width, height) that box coordinates refer to. A broken EXIF
  block is ignored (the pixels are still good).
* Alpha (RGBA, LA, PA, palette or RGB/L with a transparent colour) is
  composited onto white.
* CMYK, YCbCr, palette, 1-bit and 8-bit greyscale go through PIL's converter.
* 16-bit greyscale ("I;16", "I;16B", and "I" as PIL opens 16-bit PNGs) is
  scaled from 0..65535 to 0..255 (PIL's own conversion would clip it to
  white); 32-bit float ("F") is scaled from its own min..max.

Decompression bombs: an image whose header claims more than `max_pixels`
pixels (default 89,478,485, PIL's warning threshold) is refused before its
pixels are decoded; PIL's own DecompressionBombWarning/Error are turned into
the same DataError. PIL's global `Image.MAX_IMAGE_PIXELS` stays the ceiling:
a `max_pixels` above it cannot raise it.

`decode_image_bytes` applies the same rules to an encoded image held in memory
(images stored inside a data file, such as Chinese-CLIP's base64 TSVs).

`load_image_resized` is `load_image` followed by the bilinear resize to a model's square
input, made cheaper for the data pipeline: no full-size copy, and a JPEG much larger than
the input is decoded at a reduced scale (see its doc).
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from wenlan_cli.errors import DataError

__all__ = ["MAX_IMAGE_PIXELS", "decode_image_bytes", "image_size", "load_image", "load_image_resized"]

MAX_IMAGE_PIXELS = 89_478_485
_WHITE = (255, 255, 255)
# EXIF orientations that swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _open(path: Path, max_pixels: int | None) -> Image.Image:
    """Image.open with every failure turned into a DataError; pixels not decoded yet."""
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise DataError(f"{path}: the image file does not exist.") from None
    except OSError as exc:
        raise DataError(f"{path}: the image file cannot be read ({exc.strerror or exc}).") from None
    if os.path.isdir(path):
        raise DataError(f"{path}: is a folder, not an image file.")
    if size == 0:
        raise DataError(f"{path}: the image file is empty (0 bytes).")
    return _open_stream(path, path, max_pixels, "file")


def _open_stream(source, name, max_pixels: int | None, noun: str) -> Image.Image:
    """`Image.open(source)` (a path or a binary stream) with the failures of `_open`;
    `name` is what the messages call it, `noun` "file" or "data"."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(source)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise DataError(
            f"{name}: the image is too large to decode safely, a possible decompression bomb ({_short(exc)})."
        ) from None
    except UnidentifiedImageError:
        raise DataError(f"{name}: the {noun} is not an image that PIL can read.") from None
    except OSError as exc:
        raise DataError(f"{name}: the image {noun} cannot be read ({exc.strerror or _short(exc)}).") from None
    except Exception as exc:  # corrupt headers make PIL plugins raise anything
        raise DataError(f"{name}: the image header is corrupt ({type(exc).__name__}: {_short(exc)}).") from None
    width, height = image.size
    if max_pixels is not None and width * height > max_pixels:
        image.close()
        raise DataError(
            f"{name}: the image is {width}x{height} = {width * height:,} pixels, more than the limit of "
            f"{max_pixels:,}; refusing it as a possible decompression bomb."
        )
    return image


def _orientation(image: Image.Image) -> int:
    try:
        return int(image.getexif().get(0x0112, 1))
    except Exception:  # unreadable EXIF: treat as upright
        return 1


def image_size(path: Path | str, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> tuple[int, int]:
    """(width, height) of the displayed (EXIF-applied) image, reading only its header."""
    path = Path(path)
    image = _open(path, max_pixels)
    try:
        width, height = image.size
        if _orientation(image) in _SWAPS_AXES:
            width, height = height, width
        return width, height
    finally:
        image.close()


def _to_rgb(image: Image.Image) -> Image.Image:
    mode = image.mode
    if mode == "RGB" and "transparency" not in image.info:
        return image
    if mode.startswith("I;16") or mode == "I":
        values = np.asarray(image, dtype=np.float64)
        scaled = np.clip(values, 0, 65535) / 257.0
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L").convert("RGB")
    if mode == "F":
        values = np.asarray(image, dtype=np.float64)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        span = high - low if high > low else 1.0
        scaled = np.clip(np.nan_to_num((values - low) / span * 255.0, nan=0.0), 0, 255)
        return Image.fromarray(np.rint(scaled).astype(np.uint8), "L").convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, _WHITE + (255,))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def load_image(path: Path | str, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """Decode `path` into an RGB image, upright as displayed (see the module doc).

    `image.size` is the displayed (post-EXIF) size, the frame that region
    boxes refer to. Raises DataError naming the file and what is wrong for a
    missing, empty, truncated or corrupt file, a file that is not an image,
    an image over `max_pixels` pixels, or an unsupported colour mode. The
    returned image does not hold the file open.
    """
    path = Path(path)
    return _decode(_open(path, max_pixels), path)


def decode_image_bytes(data: bytes, source: str, *, max_pixels: int | None = MAX_IMAGE_PIXELS) -> Image.Image:
    """`load_image` for an encoded image held in memory (e.g. base64 inside a data file).

    Same rules and the same DataErrors, naming `source` (such as
    ``"valid_imgs.tsv line 7 (image_id 1000002)"``) instead of a path.
    """
    if not data:
        raise DataError(f"{source}: the image data is empty (0 bytes).")
    return _decode(_open_stream(io.BytesIO(data), source, max_pixels, "data"), source)


def _decode(image: Image.Image, name) -> Image.Image:
    """Decode the pixels of an opened image into an upright RGB copy; closes `image`."""
    try:
        _load_pixels(image, name)
        rgb = _upright_rgb(image, name, _orientation(image))
        if rgb is image:
            rgb = image.copy()  # closing the file below would free the pixels otherwise
        return rgb
    finally:
        image.close()


def _load_pixels(image: Image.Image, name) -> None:
    try:
        image.load()
    except Exception as exc:  # OSError (truncated), SyntaxError, ValueError, EOFError, struct.error...
        raise DataError(f"{name}: the image data is truncated or corrupt ({_short(exc)}).") from None


# ImageOps.exif_transpose's transposition of each EXIF orientation.
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _upright(image: Image.Image, orientation: int) -> tuple[Image.Image, bool]:
    """The loaded `image` as displayed, and whether it was transposed (not when its EXIF
    is broken or its orientation is not one of 2..8)."""
    if orientation == 1:
        return image, False
    try:
        upright = ImageOps.exif_transpose(image) or image
    except Exception:  # broken EXIF: keep the stored orientation
        return image, False
    return upright, orientation in _TRANSPOSE and upright is not image


def _rgb(image: Image.Image, name) -> Image.Image:
    try:
        return _to_rgb(image)
    except Exception as exc:
        raise DataError(f"{name}: cannot convert its colour mode {image.mode!r} to RGB ({_short(exc)}).") from None


def _upright_rgb(image: Image.Image, name, orientation: int) -> Image.Image:
    """The loaded `image` upright (EXIF applied) and in RGB; may be `image` itself."""
    return _rgb(_upright(image, orientation)[0], name)


def _transposed_box(box, size: tuple[int, int], orientation: int):
    """`box` = (0, 0, a, b) in an image of `size` = (w, h), after that image is turned as
    EXIF `orientation` (2..8) says; the box stays on the same pixels."""
    _, _, a, b = box
    w, h = size
    return {
        2: (w - a, 0, w, b),
        3: (w - a, h - b, w, h),
        4: (0, h - b, a, h),
        5: (0, 0, b, a),
        6: (h - b, 0, h, a),
        7: (h - b, w - a, h, w),
        8: (0, w - a, b, w),
    }[orientation]


# A JPEG is decoded at 1/2, 1/4 or 1/8 scale only while the reduced image keeps at least
# this many times the target size in both dimensions.
DRAFT_MARGIN = 2


def load_image_resized(
    path: Path | str, size: int, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """`load_image(path).resize((size, size), Image.BILINEAR, reducing_gap=None)` and the
    displayed (post-EXIF) size of the full image, the frame region boxes refer to.

    Same rules and DataErrors as `load_image`, at lower cost: the full-size pixels are not
    copied, and a JPEG at least `2 * DRAFT_MARGIN` times `size` in both dimensions is
    decoded by libjpeg at 1/2, 1/4 or 1/8 scale (`Image.draft`, DCT scaling), keeping at
    least `DRAFT_MARGIN * size` pixels a side, so the bilinear downscale still averages
    several source pixels per output pixel. Such JPEGs come out within a fraction of a grey
    level (mean absolute difference) of the full decode; every other image is identical.
    """
    path = Path(path)
    return _resized(_open(path, max_pixels), path, size)


def decode_image_bytes_resized(
    data: bytes, source: str, size: int, *, max_pixels: int | None = MAX_IMAGE_PIXELS
) -> tuple[Image.Image, tuple[int, int]]:
    """`load_image_resized` for an encoded image held in memory (a sample of a shard): the
    pixels its image file gives, so a dataset reads the same from shards as from files."""
    if not data:
        raise DataError(f"{source}: the image data is empty (0 bytes).")
    return _resized(_open_stream(io.BytesIO(data), source, max_pixels, "data"), source, size)


def _resized(image: Image.Image, path, size: int) -> tuple[Image.Image, tuple[int, int]]:
    """`load_image_resized` of an opened image (`path` names it in messages); closes it."""
    try:
        stored_w, stored_h = image.size
        box = None
        want = DRAFT_MARGIN * size
        if image.format in ("JPEG", "MPO") and min(stored_w // want, stored_h // want) >= 2:
            try:
                drafted = image.draft(None, (want, want))
            except Exception:  # an unusual JPEG layout: decode it at full size
                drafted = None
            if drafted is not None:
                # The original's exact extent in the reduced image, whose last row and
                # column may be partly padding.
                box = drafted[1]
        _load_pixels(image, path)
        orientation = _orientation(image)
        displayed = (stored_h, stored_w) if orientation in _SWAPS_AXES else (stored_w, stored_h)
        upright, turned = _upright(image, orientation)
        if box is not None and turned:
            box = _transposed_box(box, image.size, orientation)
        rgb = _rgb(upright, path)
        if rgb.size != (size, size):
            return rgb.resize((size, size), Image.BILINEAR, box=box, reducing_gap=None), displayed
        return (image.copy() if rgb is image else rgb), displayed
    finally:
        image.close()
