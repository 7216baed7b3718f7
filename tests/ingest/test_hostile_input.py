"""Hostile but fair input (issue 17): links out of the source, zip bombs, huge files, deep
pixels, and messages that name what the user gave, not our temporary folders."""

from __future__ import annotations

import io
import struct
import tempfile
import tracemalloc
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image as PILImage

from mics_core.db.models import Case, Image
from mics_core.imaging import BadImageError, check_image, check_image_file
from mics_core.ingest import importer
from mics_core.ingest.archive import unpacked_zip
from mics_core.ingest.importer import import_source
from mics_core.ingest.sources import SourceError
from tests.conftest import write_image


def _reasons(report) -> dict[str, str]:
    return {p.case_key or p.file: p.reason for p in report.problems}


def _original_names(db) -> list[str]:
    with db.session() as session:
        return sorted(session.scalars(sa.select(Image.original_name)))


# --- item 8: links in a folder layout ---------------------------------------------------


def test_links_in_a_folder_layout_that_leave_the_source_are_refused(tmp_path, db, settings):
    outside = tmp_path / "outside"
    write_image(outside / "secret.png", 1)
    write_image(outside / "more" / "hidden.png", 2)
    src = tmp_path / "src"
    write_image(src / "WLI" / "inside.png", 3)
    write_image(src / "NBI" / "inside.png", 4)
    write_image(src / "extra" / "real.png", 5)
    (src / "WLI" / "escape.png").symlink_to(outside / "secret.png")
    (src / "NBI" / "escape2.png").symlink_to(outside / "secret.png")
    (src / "WLI" / "more").symlink_to(outside / "more", target_is_directory=True)
    (src / "WLI" / "alias.png").symlink_to(Path("..") / "extra" / "real.png")  # stays inside: fine
    report = import_source(src, db, settings)
    assert sorted(report.imported) == ["alias", "inside"]
    reasons = _reasons(report)
    assert "link to a place outside the import folder" in reasons["escape"]
    assert "link to a place outside the import folder" in reasons["escape2"]
    assert reasons["more"].startswith("the folder is a link")
    assert "secret.png" not in " ".join(_original_names(db)) and "hidden.png" not in " ".join(_original_names(db))


def test_a_modality_folder_that_is_a_link_out_of_the_source_is_refused(tmp_path, db, settings):
    write_image(tmp_path / "elsewhere" / "WLI" / "x.png", 1)
    src = tmp_path / "src"
    src.mkdir()
    (src / "WLI").symlink_to(tmp_path / "elsewhere" / "WLI", target_is_directory=True)
    report = import_source(src, db, settings)
    assert report.imported == [] and "link to a place outside" in _reasons(report)["WLI/"]


def test_a_manifest_that_is_a_link_out_of_the_source_is_refused(tmp_path, db, settings):
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "elsewhere" / "manifest.csv").write_text("case_id,wli_path\na,a.png\n")
    src = tmp_path / "src"
    write_image(src / "a.png", 1)
    (src / "manifest.csv").symlink_to(tmp_path / "elsewhere" / "manifest.csv")
    with pytest.raises(SourceError, match=r"manifest\.csv in src is a link to a file outside it"):
        import_source(src, db, settings)


# --- item 9: zip bombs, unpacking under the data root, huge image files -------------------


def _zip(path: Path, entries: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
    return path


def _png(seed: int, size: tuple[int, int] = (24, 20)) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(
        buffer, "PNG"
    )
    return buffer.getvalue()


def test_a_highly_compressed_entry_is_refused_before_a_byte_is_unpacked(tmp_path, db, settings, monkeypatch):
    """20 MB of zeros deflate to about 20 kB (1000-fold): skipped by its declared ratio, never
    written; the honest entry beside it imports."""
    archive = _zip(tmp_path / "bomb.zip", {"WLI/good.png": _png(1), "WLI/bomb.png": b"\0" * 20_000_000})
    written: list[str] = []
    real_open = open

    def spying_open(file, mode="r", *args, **kwargs):
        if "w" in str(mode):
            written.append(str(file))
        return real_open(file, mode, *args, **kwargs)

    monkeypatch.setattr("builtins.open", spying_open)
    report = import_source(archive, db, settings)
    assert report.imported == ["good"]
    assert "grow 1,0" in _reasons(report)["WLI/bomb.png"] and "zip bomb" in _reasons(report)["WLI/bomb.png"]
    assert not any(name.endswith("bomb.png") for name in written)


def test_the_ratio_cap_is_a_parameter_and_small_entries_are_not_ratio_checked(tmp_path):
    archive = _zip(tmp_path / "a.zip", {"big.bin": b"\0" * 2_000_000, "mask.bin": b"\0" * 100_000})
    with unpacked_zip(archive, 10**9, 10, workdir=tmp_path / "work", max_ratio=10) as (root, problems):
        assert [p.file for p in problems] == ["big.bin"]
        assert (root / "mask.bin").stat().st_size == 100_000  # ~1000-fold, but only 100 kB
    with unpacked_zip(archive, 10**9, 10, workdir=tmp_path / "work", max_ratio=5000) as (root, problems):
        assert problems == [] and (root / "big.bin").stat().st_size == 2_000_000


def test_zips_unpack_under_the_data_root_never_the_system_temp_folder(tmp_path, db, settings, monkeypatch):
    system_tmp = tmp_path / "system-tmp"
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    archive = _zip(tmp_path / "upload.zip", {"WLI/a.png": _png(1)})
    roots: list[Path] = []
    real = importer.discover
    monkeypatch.setattr(importer, "discover", lambda root, name=None: roots.append(root) or real(root, name))
    assert import_source(archive, db, settings).imported == ["a"]
    assert roots[0].parent == settings.data_root / "incoming"
    assert not roots[0].exists() and list(system_tmp.iterdir()) == []


def _lie_about_size(archive: Path, name: str, declared: int) -> None:
    """Rewrite the uncompressed size `name` declares, in its local and central headers."""
    data = bytearray(archive.read_bytes())
    with zipfile.ZipFile(archive) as zf:
        info = zf.getinfo(name)
    data[info.header_offset + 22 : info.header_offset + 26] = struct.pack("<I", declared)
    central = data.find(b"PK\x01\x02")
    while central != -1:
        length = struct.unpack("<H", data[central + 28 : central + 30])[0]
        if data[central + 46 : central + 46 + length].decode() == name:
            data[central + 24 : central + 28] = struct.pack("<I", declared)
        central = data.find(b"PK\x01\x02", central + 4)
    archive.write_bytes(bytes(data))


def test_an_entry_that_holds_more_than_it_declares_is_cut_off_and_refused(tmp_path, db, settings):
    archive = _zip(tmp_path / "liar.zip", {"WLI/good.png": _png(1), "WLI/liar.png": _png(2, (400, 400))})
    _lie_about_size(archive, "WLI/liar.png", 1000)
    report = import_source(archive, db, settings)
    assert report.imported == ["good"]
    assert (
        "could not be unpacked" in _reasons(report)["WLI/liar.png"]
        or "more than it declares" in (_reasons(report)["WLI/liar.png"])
    )


def test_a_huge_image_file_is_refused_by_its_size_before_it_is_read(tmp_path, db, settings):
    """600 MB on disk (a sparse file: a PNG header and then nothing) is refused from its size
    alone; memory stays far below the file's size."""
    src = tmp_path / "src"
    write_image(src / "WLI" / "small.png", 1)
    huge = src / "WLI" / "huge.png"
    with open(huge, "wb") as file:
        file.write(_png(2))
        file.truncate(600 * 1024**2)
    tracemalloc.start()
    try:
        report = import_source(src, db, settings)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report.imported == ["small"]
    assert "600 MB, larger than the limit of 512 MB" in _reasons(report)["huge"]
    assert peak < 50 * 1024**2


def test_an_image_declaring_too_many_pixels_is_refused_from_its_header(tmp_path, monkeypatch):
    path = write_image(tmp_path / "wide.png", 1, size=(300, 200))
    monkeypatch.setattr(Path, "read_bytes", lambda self: pytest.fail("the file was read whole"))
    with pytest.raises(BadImageError, match="too large \\(300×200 pixels"):
        check_image_file(path, max_pixels=10_000)
    with pytest.raises(BadImageError, match="larger than the limit of 0 MB"):
        check_image_file(path, max_pixels=10**9, max_bytes=1000)
    check_image_file(path, max_pixels=10**9)


# --- item 10: 16-bit and 32-bit pixels -----------------------------------------------------


def _encoded(array: np.ndarray, fmt: str) -> bytes:
    buffer = io.BytesIO()
    PILImage.fromarray(array).save(buffer, fmt)
    return buffer.getvalue()


def _png16_rgb(array: np.ndarray) -> bytes:
    """A 16-bit-per-channel colour PNG, written by hand (Pillow cannot write one)."""
    height, width, _ = array.shape

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\0" + array[y].astype(">u2").tobytes() for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 16, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


RAMP = np.arange(24 * 20).reshape(20, 24)


@pytest.mark.parametrize(
    ("name", "array", "depth"),
    [
        ("grey16.png", (RAMP * 100 + 3000).astype(np.uint16), "16-bit"),  # 3000..50900: all white if clipped
        ("grey12.tif", (RAMP * 8).astype(np.uint16), "16-bit"),  # a 12-bit sensor in a 16-bit file
        ("int32.tif", (RAMP * 100_000).astype(np.int32), "32-bit"),
        ("float.tif", (RAMP / RAMP.max()).astype(np.float32), "32-bit"),  # 0-1: all black if clipped
    ],
)
def test_deep_single_channel_images_are_scaled_to_8_bits_not_clipped(name, array, depth):
    checked = check_image(_encoded(array, name.rsplit(".")[-1].replace("tif", "TIFF")), name, 10**6)
    pixels = np.asarray(checked.rgb).astype(int)
    assert pixels.min() == 0 and pixels.max() == 255  # the full range: neither all white nor all black
    assert len(np.unique(pixels[..., 0])) > 200  # the ramp survives as a ramp
    expected = np.rint((array - array.min()) * (255 / (array.max() - array.min())))
    assert np.abs(pixels[..., 0] - expected).max() <= 1
    assert checked.scaled_from == depth and checked.format == "PNG"
    assert np.array_equal(np.asarray(PILImage.open(io.BytesIO(checked.data)).convert("RGB")), np.asarray(checked.rgb))


def test_a_16_bit_colour_png_keeps_its_high_byte():
    array = np.random.default_rng(0).integers(0, 65536, (20, 24, 3)).astype(np.uint16)
    checked = check_image(_png16_rgb(array), "colour16.png", 10**6)
    assert np.array_equal(np.asarray(checked.rgb), (array >> 8).astype(np.uint8))


def test_a_float_image_with_nan_pixels_is_refused_in_words():
    array = np.ones((20, 24), np.float32)
    array[3, 3] = np.nan
    with pytest.raises(BadImageError, match="not numbers"):
        check_image(_encoded(array, "TIFF"), "nan.tif", 10**6)


def test_import_of_16_bit_images_stores_the_visible_8_bit_picture_and_says_so(tmp_path, db, settings):
    src = tmp_path / "src"
    (src / "WLI").mkdir(parents=True)
    (src / "WLI" / "deep.png").write_bytes(_encoded((RAMP * 100 + 3000).astype(np.uint16), "PNG"))
    report = import_source(src, db, settings)
    assert report.imported == ["deep"]
    assert any("1 image(s) with 16-bit pixels were scaled to 8 bits" in note for note in report.notes)
    with db.session() as session:
        image = session.scalar(sa.select(Image).where(Image.original_name == "deep.png"))
        stored = PILImage.open(settings.data_root / image.path)
        assert stored.mode == "RGB" and np.asarray(stored).max() == 255 and np.asarray(stored).min() == 0
    assert import_source(src, db, settings).unchanged == ["deep"]  # the same file again: the same case


# --- item 12: messages name the user's zip and say what happened -------------------------------


def test_messages_name_the_users_zip_not_the_folder_it_was_unpacked_in(tmp_path, db, settings):
    archive = _zip(tmp_path / "upload.zip", {"photos/x.png": _png(1)})
    with pytest.raises(SourceError) as raised:
        import_source(archive, db, settings, display_name="clinic photos.zip")
    assert "in clinic photos.zip:" in str(raised.value) and "zip-" not in str(raised.value)
    with pytest.raises(SourceError, match=r"in upload\.zip:"):
        import_source(archive, db, settings)
    with pytest.raises(SourceError, match=r"^clinic photos\.zip is not a readable zip"):
        import_source(_zip_garbage(tmp_path / "junk.zip"), db, settings, display_name="clinic photos.zip")


def _zip_garbage(path: Path) -> Path:
    path.write_bytes(b"not a zip")
    return path


def test_a_case_whose_wli_and_nbi_are_the_same_file_says_so(tmp_path, db, settings):
    src = tmp_path / "src"
    write_image(src / "WLI" / "selfdup.png", 1)
    write_image(src / "NBI" / "selfdup.png", 1)
    write_image(src / "WLI" / "fine.png", 2)
    report = import_source(src, db, settings)
    assert report.imported == ["fine"]
    reason = _reasons(report)["selfdup"]
    assert reason.startswith("the WLI and NBI images are the same file") and "already case" not in reason
    with db.session() as session:
        assert session.scalar(sa.select(sa.func.count()).select_from(Case)) == 1
