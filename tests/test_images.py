"""Safe image decoding: every bad file is a DataError naming it; odd modes become RGB."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw, JpegImagePlugin

from wenlan_cli.data.images import DRAFT_MARGIN, MAX_IMAGE_PIXELS, image_size, load_image, load_image_resized
from wenlan_cli.errors import DataError


def save(image: Image.Image, path, fmt: str | None = None, **kwargs):
    image.save(path, format=fmt, **kwargs)
    return path


def load_error(path, **kwargs) -> str:
    with pytest.raises(DataError) as info:
        load_image(path, **kwargs)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def pixel(image: Image.Image, xy) -> tuple[int, int, int]:
    return image.getpixel(xy)


def test_rgb_jpeg_loads(tmp_path):
    path = save(Image.new("RGB", (32, 24), (200, 10, 10)), tmp_path / "a.jpg")
    image = load_image(path)
    assert image.mode == "RGB" and image.size == (32, 24)
    r, g, b = pixel(image, (5, 5))
    assert r > 180 and g < 40 and b < 40


def test_loaded_image_does_not_need_the_file(tmp_path):
    path = save(Image.new("RGB", (8, 8), (0, 255, 0)), tmp_path / "a.png")
    image = load_image(path)
    path.unlink()
    assert pixel(image, (0, 0)) == (0, 255, 0)


def test_missing_file_and_folder(tmp_path):
    assert "does not exist" in load_error(tmp_path / "nope.jpg")
    (tmp_path / "dir.jpg").mkdir()
    assert "is a folder" in load_error(tmp_path / "dir.jpg")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert "is empty (0 bytes)" in load_error(path)


@pytest.mark.parametrize("fmt, suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated_files(tmp_path, fmt, suffix):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format=fmt)
    data = buffer.getvalue()
    path = tmp_path / f"cut.{suffix}"
    path.write_bytes(data[: len(data) // 2])
    assert "truncated or corrupt" in load_error(path)


def test_garbage_after_a_png_signature(tmp_path):
    path = tmp_path / "bad.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    message = load_error(path)
    assert "corrupt" in message or "not an image" in message or "cannot be read" in message


def test_text_file_is_not_an_image(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("这不是图片\n", encoding="utf-8")
    assert "is not an image that PIL can read" in load_error(path)


def test_wrong_extension_is_decoded_by_content(tmp_path):
    path = save(Image.new("RGB", (10, 6), (1, 2, 3)), tmp_path / "really_a_png.jpg", "PNG")
    image = load_image(path)
    assert image.size == (10, 6) and pixel(image, (0, 0)) == (1, 2, 3)


def test_pixel_limit_refuses_a_bomb_before_decoding(tmp_path):
    path = save(Image.new("RGB", (20, 20)), tmp_path / "big.png")
    message = load_error(path, max_pixels=100)
    assert "20x20 = 400 pixels" in message and "decompression bomb" in message
    with pytest.raises(DataError, match="decompression bomb"):
        image_size(path, max_pixels=100)
    assert load_image(path, max_pixels=400).size == (20, 20)
    assert MAX_IMAGE_PIXELS == 89_478_485


@pytest.mark.parametrize("side", [11, 20])  # 121 px: PIL's warning; 400 px: PIL's error
def test_pils_own_bomb_warning_and_error_become_data_errors(tmp_path, monkeypatch, side):
    path = save(Image.new("RGB", (side, side)), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    assert "decompression bomb" in load_error(path, max_pixels=None)


def test_cmyk_jpeg_becomes_rgb(tmp_path):
    path = save(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), tmp_path / "cmyk.jpg")
    with Image.open(path) as raw:
        assert raw.mode == "CMYK"
    image = load_image(path)
    assert image.mode == "RGB"
    r, g, b = pixel(image, (8, 8))
    assert r > 200 and g < 60 and b < 60


def test_palette_with_transparency_is_composited_on_white(tmp_path):
    palette_image = Image.new("P", (4, 4), 0)
    palette_image.putpalette([255, 0, 0, 0, 0, 255] + [0] * (256 * 3 - 6))
    palette_image.putpixel((1, 1), 1)
    path = save(palette_image, tmp_path / "p.png", transparency=0)
    with Image.open(path) as raw:
        assert raw.mode == "P" and "transparency" in raw.info
    image = load_image(path)
    assert image.mode == "RGB"
    assert pixel(image, (0, 0)) == (255, 255, 255)  # transparent red -> white
    assert pixel(image, (1, 1)) == (0, 0, 255)


def test_plain_palette_gif(tmp_path):
    path = save(Image.new("RGB", (6, 6), (0, 128, 0)).convert("P"), tmp_path / "p.gif")
    image = load_image(path)
    assert image.mode == "RGB" and pixel(image, (2, 2))[1] > 100


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
    values = np.array([[0, 32896, 65535, 1000]], dtype=np.uint16)
    path = save(Image.fromarray(values), tmp_path / "g16.png")
    with Image.open(path) as raw:
        assert raw.mode in ("I;16", "I")
    image = load_image(path)
    assert image.mode == "RGB"
    assert [pixel(image, (x, 0))[0] for x in range(4)] == [0, 128, 255, 4]


def test_thirty_two_bit_greyscale(tmp_path):
    values = np.array([[0, 65535, 70000, -5]], dtype=np.int32)
    path = save(Image.fromarray(values, "I"), tmp_path / "g32.tiff")
    with Image.open(path) as raw:
        assert raw.mode == "I"
    image = load_image(path)
    assert [pixel(image, (x, 0))[0] for x in range(4)] == [0, 255, 255, 0]


def test_float_greyscale(tmp_path):
    values = np.array([[0.0, 0.5, 1.0]], dtype=np.float32)
    path = save(Image.fromarray(values, "F"), tmp_path / "f.tiff")
    assert [pixel(load_image(path), (x, 0))[0] for x in range(3)] == [0, 128, 255]


def test_la_and_rgba_alpha_are_composited_on_white(tmp_path):
    la = Image.new("LA", (2, 1), (0, 255))
    la.putpixel((1, 0), (0, 0))
    image = load_image(save(la, tmp_path / "la.png"))
    assert pixel(image, (0, 0)) == (0, 0, 0) and pixel(image, (1, 0)) == (255, 255, 255)

    rgba = Image.new("RGBA", (1, 1), (255, 0, 0, 128))
    r, g, b = pixel(load_image(save(rgba, tmp_path / "rgba.png")), (0, 0))
    assert r == 255 and 120 <= g <= 135 and g == b


def test_one_bit_image(tmp_path):
    mono = Image.new("1", (3, 3), 1)
    mono.putpixel((0, 0), 0)
    image = load_image(save(mono, tmp_path / "m.png"))
    assert pixel(image, (0, 0)) == (0, 0, 0) and pixel(image, (1, 1)) == (255, 255, 255)


def test_exif_orientation_is_applied_and_sizes_agree(tmp_path):
    stored = Image.new("RGB", (40, 20), (0, 0, 0))
    stored.paste((255, 0, 0), (0, 0, 8, 8))  # red marker at the stored top-left
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed = stored rotated 90 degrees clockwise
    path = save(stored, tmp_path / "rotated.png", exif=exif.tobytes())
    image = load_image(path)
    assert image.size == (20, 40) == image_size(path)
    r, g, b = pixel(image, (17, 2))  # the marker is now at the top-right
    assert r > 200 and g < 50
    assert pixel(image, (2, 2)) == (0, 0, 0)


def test_image_size_of_an_upright_image(tmp_path):
    path = save(Image.new("RGB", (7, 3)), tmp_path / "a.png")
    assert image_size(path) == (7, 3)


# load_image_resized: load_image + the bilinear square resize, with large JPEGs decoded at a
# reduced scale (Image.draft).


def reference_resized(path, size: int) -> Image.Image:
    return load_image(path).resize((size, size), Image.BILINEAR, reducing_gap=None)


def photo_like(width: int, height: int) -> Image.Image:
    """A smooth colour gradient with a few sharp-edged shapes on it."""
    y, x = np.mgrid[0:height, 0:width]
    channels = [x * 255 / width, y * 255 / height, (x + y) * 127 / (width + height) + 60]
    image = Image.fromarray(np.stack(channels, -1).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.rectangle((width // 10, height // 8, width // 3, height // 2), fill=(250, 20, 20))
    draw.ellipse((width // 2, height // 2, width * 9 // 10, height * 9 // 10), fill=(10, 200, 30))
    draw.rectangle((width * 6 // 10, height // 10, width * 8 // 10, height // 4), fill=(0, 0, 0))
    return image


def mean_abs_diff(a: Image.Image, b: Image.Image) -> float:
    assert a.size == b.size and a.mode == b.mode == "RGB"
    return float(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).mean())


@pytest.fixture
def draft_calls(monkeypatch):
    """The scales JPEG draft decoding reduced to: one (box, scale) entry per draft."""
    calls = []
    real = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        result = real(self, mode, size)
        calls.append(result)
        return result

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    return calls


def test_resized_png_is_identical_to_load_then_resize(tmp_path):
    path = save(photo_like(50, 30), tmp_path / "a.png")
    image, size = load_image_resized(path, 16)
    assert image.mode == "RGB" and image.size == (16, 16)
    assert size == load_image(path).size == (50, 30)
    assert np.array_equal(np.asarray(image), np.asarray(reference_resized(path, 16)))


@pytest.mark.parametrize("width, height", [(40, 30), (63, 90), (200, 60)])
def test_resized_small_jpeg_is_identical_and_not_drafted(tmp_path, draft_calls, width, height):
    # size 16: a draft needs 2 * DRAFT_MARGIN * 16 = 64 px on both sides; (200, 60) has one
    # short side.
    assert DRAFT_MARGIN == 2
    path = save(photo_like(width, height), tmp_path / "a.jpg", quality=90)
    image, size = load_image_resized(path, 16)
    assert size == load_image(path).size == (width, height)
    assert np.array_equal(np.asarray(image), np.asarray(reference_resized(path, 16)))
    assert all(scale is None for scale in draft_calls)


def test_resized_at_the_input_size_is_the_image_itself(tmp_path):
    path = save(photo_like(16, 16), tmp_path / "a.png")
    expected = np.asarray(load_image(path))
    image, size = load_image_resized(path, 16)
    path.unlink()  # the result does not need the file
    assert size == (16, 16)
    assert np.array_equal(np.asarray(image), expected)


@pytest.mark.parametrize(
    "width, height, side",
    [(500, 400, 96), (1000, 800, 96), (1001, 777, 96), (2400, 1600, 32)],  # 1/2, 1/4, 1/4, 1/8 scale
)
def test_resized_large_jpeg_is_drafted_and_close_to_the_full_decode(tmp_path, draft_calls, width, height, side):
    path = save(photo_like(width, height), tmp_path / "big.jpg", quality=90)
    image, size = load_image_resized(path, side)
    assert any(scale is not None for scale in draft_calls)  # the reduced decode really ran
    assert image.mode == "RGB" and image.size == (side, side)
    assert size == (width, height)
    assert mean_abs_diff(image, reference_resized(path, side)) < 1.5


@pytest.mark.parametrize("orientation", [0, 9])
def test_resized_large_jpeg_with_an_invalid_orientation_keeps_the_stored_frame(tmp_path, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = save(photo_like(1001, 777), tmp_path / "odd.jpg", quality=90, exif=exif.tobytes())
    image, size = load_image_resized(path, 32)
    assert size == (1001, 777) == load_image(path).size
    assert mean_abs_diff(image, reference_resized(path, 32)) < 1.5


@pytest.mark.parametrize("orientation", range(2, 9))
def test_resized_large_jpeg_applies_exif_orientation(tmp_path, draft_calls, orientation):
    exif = Image.Exif()
    exif[0x0112] = orientation
    # Odd sizes: the last reduced row and column are partly padding, so the crop box must
    # turn with the image.
    path = save(photo_like(1001, 777), tmp_path / "turned.jpg", quality=90, exif=exif.tobytes())
    image, size = load_image_resized(path, 32)
    assert any(scale is not None for scale in draft_calls)
    expected_size = (777, 1001) if orientation >= 5 else (1001, 777)
    assert size == expected_size == load_image(path).size == image_size(path)
    reference = reference_resized(path, 32)
    assert mean_abs_diff(image, reference) < 1.5
    # A wrong orientation would be far off: the shapes are not symmetric.
    with Image.open(path) as stored:
        unturned = stored.convert("RGB").resize((32, 32), Image.BILINEAR, reducing_gap=None)
    assert mean_abs_diff(unturned, reference) > 10


def test_resized_small_jpeg_with_exif_orientation_is_identical(tmp_path):
    exif = Image.Exif()
    exif[0x0112] = 6
    path = save(photo_like(40, 30), tmp_path / "turned.jpg", quality=90, exif=exif.tobytes())
    image, size = load_image_resized(path, 16)
    assert size == (30, 40)
    assert np.array_equal(np.asarray(image), np.asarray(reference_resized(path, 16)))


@pytest.mark.parametrize("mode", ["L", "CMYK"])
def test_resized_large_jpeg_in_other_colour_modes(tmp_path, draft_calls, mode):
    path = save(photo_like(1000, 800).convert(mode), tmp_path / f"{mode}.jpg", quality=90)
    image, size = load_image_resized(path, 96)
    assert any(scale is not None for scale in draft_calls)
    assert size == (1000, 800) and image.mode == "RGB"
    assert mean_abs_diff(image, reference_resized(path, 96)) < 1.5


def resized_error(path) -> str:
    with pytest.raises(DataError) as info:
        load_image_resized(path, 16)
    message = str(info.value)
    assert str(path) in message and "\n" not in message
    return message


def test_resized_bad_files_raise_data_errors_like_load_image(tmp_path):
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    assert "is empty (0 bytes)" in resized_error(empty)

    text = tmp_path / "notes.jpg"
    text.write_text("这不是图片\n", encoding="utf-8")
    assert "is not an image that PIL can read" in resized_error(text)

    assert "does not exist" in resized_error(tmp_path / "nope.jpg")

    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert "truncated or corrupt" in resized_error(cut)
    assert resized_error(cut) == load_error(cut)


def test_resized_truncated_large_jpeg_on_the_draft_path(tmp_path, draft_calls):
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 255, (300, 260, 3), dtype=np.uint8))
    buffer = io.BytesIO()
    noisy.save(buffer, format="JPEG")
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    # size 16: 300 and 260 are both at least 2 * DRAFT_MARGIN * 16 * 2, so a draft is taken.
    assert "truncated or corrupt" in resized_error(cut)
    assert any(scale is not None for scale in draft_calls)


def test_resized_respects_the_pixel_limit(tmp_path):
    path = save(Image.new("RGB", (20, 20)), tmp_path / "big.png")
    with pytest.raises(DataError, match="decompression bomb"):
        load_image_resized(path, 8, max_pixels=100)
    assert load_image_resized(path, 8, max_pixels=400)[1] == (20, 20)
