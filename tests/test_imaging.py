"""Image checks and the computed pseudo-NBI view."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from mics_core.imaging import BadImageError, check_image, make_thumbnail, pseudo_nbi


def test_pseudo_nbi_maps_green_to_red_and_blue_to_green_and_blue():
    rgb = np.zeros((16, 16, 3), np.uint8)
    rgb[:, :8] = (200, 30, 120)
    rgb[:, 8:] = (90, 160, 40)
    out = np.asarray(pseudo_nbi(Image.fromarray(rgb))).astype(int)
    left, right = out[4, 2], out[4, 12]
    assert left[0] < right[0]  # red now follows the old green channel
    assert left[1] > right[1] and left[2] > right[2]  # green and blue follow the old blue
    assert left[1] == left[2]


def test_pseudo_nbi_stretches_contrast():
    low = np.full((16, 16, 3), 100, np.uint8)
    low[:, 8:] = 120
    out = np.asarray(pseudo_nbi(Image.fromarray(low)))
    assert out.max() - out.min() > 100


def test_check_image_accepts_all_four_formats(tmp_path):
    pixels = np.random.default_rng(0).integers(0, 255, (12, 10, 3), dtype=np.uint8)
    for fmt, suffix in (("PNG", "png"), ("JPEG", "jpg"), ("TIFF", "tiff"), ("BMP", "bmp")):
        path = tmp_path / f"x.{suffix}"
        Image.fromarray(pixels).save(path, format=fmt)
        checked = check_image(path.read_bytes(), path.name, 10_000)
        assert (checked.format, checked.width, checked.height, checked.rgb.mode) == (fmt, 10, 12, "RGB")


def test_greyscale_and_alpha_images_become_rgb(tmp_path):
    path = tmp_path / "g.png"
    Image.new("LA", (5, 5)).save(path)
    assert check_image(path.read_bytes(), "g.png", 100).rgb.mode == "RGB"


def test_extension_is_checked_first():
    with pytest.raises(BadImageError, match="not a supported image type"):
        check_image(b"anything", "report.docx", 100)


def test_thumbnail_keeps_aspect_ratio():
    thumb = Image.open(__import__("io").BytesIO(make_thumbnail(Image.new("RGB", (400, 200)), 100)))
    assert thumb.size == (100, 50) and thumb.format == "JPEG"


def test_the_computed_view_is_the_pseudo_nbi_image_encoded_once_as_png():
    import hashlib
    import io

    from mics_core.imaging import computed_view

    wli = Image.fromarray(np.random.default_rng(1).integers(0, 255, (12, 10, 3), dtype=np.uint8))
    view = computed_view(wli)
    assert (view.format, view.width, view.height) == ("PNG", 10, 12)
    assert view.sha256 == hashlib.sha256(view.data).hexdigest()
    decoded = np.asarray(Image.open(io.BytesIO(view.data)))
    assert (decoded == np.asarray(pseudo_nbi(wli))).all() and (decoded == np.asarray(view.rgb)).all()
