"""Decoding and checking image files, thumbnails, and the computed pseudo-NBI view.

Every check returns a reason a clinician can act on ("the file is truncated"), not a
Pillow exception text. Checks that need only the file's size or header come first, so a
huge file is refused before it is read whole or decoded.

Images with more than 8 bits per pixel are never clipped: Pillow itself reduces 16-bit
colour PNGs to 8 bits by their high byte (the dtype's range); single-channel 16-bit,
32-bit integer and 32-bit floating-point images, which Pillow would clip to all white or
all black, are scaled to 8 bits by their own range of values (a 12-bit sensor's values
in a 16-bit file, or a float image in 0-1, would be near-black by the dtype's range), and
stored as that 8-bit PNG, so every reader of the store sees the same visible picture.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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
    # "16-bit" or "32-bit" when the file's pixels were scaled to 8 bits (`data` is then that PNG)
    scaled_from: str | None = None


def check_image_file(path: Path, max_pixels: int, max_bytes: int = MAX_FILE_BYTES) -> None:
    """Refuse `path` by its size on disk and the pixel count its header declares, before
    anyone reads it whole (`check_image` then decodes it); raise `BadImageError` saying why."""
    _check_suffix(path.name)
    size = path.stat().st_size
    if not size:
        raise BadImageError("the file is empty")
    if size > max_bytes:
        raise BadImageError(_too_many_bytes(size, max_bytes))
    with open(path, "rb") as file:
        _open_header(file, max_pixels).close()


def check_image(data: bytes, name: str, max_pixels: int) -> CheckedImage:
    """Decode `data` fully and return it as RGB, or raise `BadImageError` saying why not."""
    _check_suffix(name)
    if not data:
        raise BadImageError("the file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise BadImageError(_too_many_bytes(len(data), MAX_FILE_BYTES))
    image = _open_header(io.BytesIO(data), max_pixels)
    width, height = image.size
    try:
        image.load()
    except (OSError, SyntaxError, ValueError):
        raise BadImageError("the file is truncated or damaged and cannot be read completely") from None
    if _is_high_depth(image):
        rgb, depth = _scaled_to_8_bits(image)
        data = _encode(rgb, "PNG")
        return CheckedImage(data, hashlib.sha256(data).hexdigest(), "PNG", width, height, rgb, depth)
    try:
        rgb = image.convert("RGB") if image.mode != "RGB" else image
    except ValueError:
        raise BadImageError(f"the image's colour mode ({image.mode}) cannot be shown as RGB; save it as RGB") from None
    return CheckedImage(data, hashlib.sha256(data).hexdigest(), image.format, width, height, rgb)


def _check_suffix(name: str) -> None:
    suffix = "." + name.rsplit(".", 1)[-1].lower() if "." in name else ""
    if suffix not in SUFFIXES:
        raise BadImageError("not a supported image type (use PNG, JPEG, TIFF or BMP)")


def _too_many_bytes(size: int, max_bytes: int) -> str:
    return f"the file is {size / 1024**2:,.0f} MB, larger than the limit of {max_bytes // 1024**2:,} MB"


def _open_header(file, max_pixels: int) -> Image.Image:
    """The image with only its header read, once its format and pixel count passed."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            image = Image.open(file)
    except Image.DecompressionBombError:
        raise BadImageError(_too_large(None, max_pixels)) from None
    except (UnidentifiedImageError, OSError):
        raise BadImageError("not a readable image: the file is corrupt or not an image") from None
    if image.format not in FORMATS:
        raise BadImageError(f"the file is a {image.format} image; use PNG, JPEG, TIFF or BMP")
    width, height = image.size
    if width * height > max_pixels:
        raise BadImageError(_too_large((width, height), max_pixels))
    return image


def _is_high_depth(image: Image.Image) -> bool:
    """Single-channel 16-bit ("I;16…"), 32-bit integer ("I") or float ("F") pixels."""
    return image.mode == "F" or image.mode.startswith("I")


def _scaled_to_8_bits(image: Image.Image) -> tuple[Image.Image, str]:
    """The image stretched linearly from its own lowest to highest value onto 0-255, as RGB
    grey (a flat image becomes black), and its original depth in words."""
    pixels = np.asarray(image)
    depth = "16-bit" if pixels.dtype.itemsize == 2 else "32-bit"
    values = pixels.astype(np.float32)
    if not np.isfinite(values).all():
        raise BadImageError(f"the {depth} image holds pixels that are not numbers (NaN or infinity)")
    low, high = float(values.min()), float(values.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    grey = np.rint((values - low) * scale).astype(np.uint8)
    return Image.fromarray(grey, "L").convert("RGB"), depth


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
