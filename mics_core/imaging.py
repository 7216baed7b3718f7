"""Decoding and checking image files, thumbnails, and the computed pseudo-NBI view.

Every check returns a reason a clinician can act on ("the file is truncated"), not a
Pillow exception text.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageFilter, ImageOps, UnidentifiedImageError

SUFFIXES = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP"}
FORMATS = frozenset(SUFFIXES.values())
MAX_FILE_BYTES = 512 * 1024**2


class BadImageError(ValueError):
    """An image that cannot be imported; the message is meant for the user."""


@dataclass(frozen=True)
class CheckedImage:
    data: bytes
    sha256: str
    format: str
    width: int
    height: int
    rgb: Image.Image


def check_image(data: bytes, name: str, max_pixels: int) -> CheckedImage:
    """Decode `data` fully and return it as RGB, or raise `BadImageError` saying why not."""
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in SUFFIXES:
        raise BadImageError("not a supported image type (use PNG, JPEG, TIFF or BMP)")
    if not data:
        raise BadImageError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(f"the file is larger than {MAX_FILE_BYTES // 1024**2} MB")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError:
        raise BadImageError(_too_large(None, max_pixels)) from None
    except (UnidentifiedImageError, OSError):
        raise BadImageError("not a readable image: the file is corrupt or not an image") from None
    if image.format not in FORMATS:
        raise BadImageError(f"the file is a {image.format} image; use PNG, JPEG, TIFF or BMP")
    width, height = image.size
    if width * height > max_pixels:
        raise BadImageError(_too_large((width, height), max_pixels))
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise BadImageError("the file is truncated or damaged and cannot be read completely") from None
    rgb = image.convert("RGB") if image.mode != "RGB" else image
    return CheckedImage(data, hashlib.sha256(data).hexdigest(), image.format, width, height, rgb)


def _too_large(size: tuple[int, int] | None, max_pixels: int) -> str:
    limit = f"the limit is {max_pixels / 1e6:g} megapixels"
    if size is None:
        return f"the image is far too large to open safely ({limit})"
    return f"the image is too large ({size[0]}×{size[1]} pixels; {limit})"


def pseudo_nbi(rgb: Image.Image) -> Image.Image:
    """A computed NBI-like view of a white-light image.

    Real NBI lights the mucosa with two narrow bands, 415 nm (blue, absorbed by
    superficial capillaries) and 540 nm (green, deeper vessels), and shows the green band
    in the red channel and the blue band in the green and blue channels. We do the same
    with the WLI image's channels (G -> R, B -> G and B), stretch each channel's contrast
    (1 % clipped) and sharpen fine structure, so vessels stand out dark brown/teal as in
    NBI. It is an approximation, always stored as `computed`.
    """
    _, green, blue = rgb.convert("RGB").split()
    merged = Image.merge("RGB", (green, blue, blue))
    stretched = ImageOps.autocontrast(merged, cutoff=1)
    return stretched.filter(ImageFilter.UnsharpMask(radius=3, percent=120, threshold=2))


def computed_view(wli: Image.Image) -> CheckedImage:
    """The pseudo-NBI view of a checked WLI image, ready to store: encoded to PNG and hashed
    once, never decoded again (we made the pixels, so there is nothing to check)."""
    view = pseudo_nbi(wli)
    data = _encode(view, "PNG")
    return CheckedImage(data, hashlib.sha256(data).hexdigest(), "PNG", view.width, view.height, view)


def make_thumbnail(image: Image.Image, size: int) -> bytes:
    """A JPEG at most `size` pixels on its longer side, for lists and the review queue."""
    thumb = image.copy()
    thumb.thumbnail((size, size))
    return _encode(thumb, "JPEG", quality=85)


def _encode(image: Image.Image, format: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=format, **options)
    return buffer.getvalue()
