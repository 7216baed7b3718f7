"""Unpacking a zip upload without trusting it.

Every entry name is checked before anything is written (no `..`, no absolute or drive
paths, no links, no control characters). Before a byte is unpacked, the entry count, the
declared total size, the free disk space and each entry's declared size and compression
ratio are checked (zip bombs); then each entry is streamed in chunks with a running byte
count, so no entry ever grows past what it declared and nothing is held whole in memory.
Files are written only to paths we build ourselves, never with `extractall`, into a
folder under the data root (not the system's temporary folder, which may be small or
shared), removed afterwards.
"""

from __future__ import annotations

import errno
import re
import shutil
import stat
import time
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory

from mics_core.config import Settings
from mics_core.imaging import MAX_FILE_BYTES
from mics_core.ingest.sources import Problem, SourceError

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Images are stored compressed already: PNG and JPEG entries deflate about 1:1, uncompressed
# TIFF or BMP endoscopy frames about 2-10:1, a frame with a wide black border perhaps 30:1.
# A zip bomb needs hundreds to a thousand-fold (deflate's ceiling is about 1032:1), so 200:1
# refuses bombs with a wide margin for real images (`Settings.max_zip_ratio`, its one source).
MAX_RATIO = Settings.max_zip_ratio
# Entries under this size are not ratio-checked: a tiny file (a blank mask, a short CSV) may
# compress far better than 200:1, and cannot fill a disk.
RATIO_FLOOR_BYTES = 1024**2
CHUNK_BYTES = 1024**2
# Unpacking folders left behind by a process killed mid-import are removed after this long.
LEFTOVER_SECONDS = 24 * 3600
PREFIX = "zip-"


def unsafe_entry_reason(info: zipfile.ZipInfo, max_ratio: float = MAX_RATIO) -> str | None:
    """Why a zip entry must not be unpacked, or None when it is safe."""
    name = info.filename
    if _CONTROL.search(name):
        return "the file name contains control characters"
    if name.startswith(("/", "\\")) or _DRIVE.match(name):
        return "the file name is an absolute path"
    if ".." in PurePosixPath(name.replace("\\", "/")).parts:
        return "the file name points outside the archive ('..')"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "the entry is a link, not a file"
    if info.flag_bits & 0x1:
        return "the entry is encrypted"
    if info.file_size > MAX_FILE_BYTES:
        size, limit = info.file_size / 1024**2, MAX_FILE_BYTES // 1024**2
        return f"the file would be {size:,.0f} MB unpacked, larger than the limit of {limit:,} MB for an image"
    ratio = info.file_size / max(info.compress_size, 1)
    if info.file_size > RATIO_FLOOR_BYTES and ratio > max_ratio:
        return (
            f"the file would grow {ratio:,.0f}-fold when unpacked, as only a malicious 'zip bomb' does "
            f"(at most {max_ratio:g}-fold is accepted), so it was not unpacked"
        )
    return None


@contextmanager
def unpacked_zip(
    path: Path,
    max_bytes: int,
    max_entries: int,
    *,
    workdir: Path,
    name: str | None = None,
    max_ratio: float = MAX_RATIO,
) -> Iterator[tuple[Path, list[Problem]]]:
    """Unpack `path` into a new folder under `workdir`, removed afterwards; yield it and the
    rejected entries. `name` is what messages call the zip (the user's file name)."""
    shown = name or path.name
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise SourceError(f"{shown} is not a readable zip file") from None
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    _remove_leftovers(workdir)
    with archive, TemporaryDirectory(prefix=PREFIX, dir=workdir) as tmp:
        entries = archive.infolist()
        if len(entries) > max_entries:
            raise SourceError(f"{shown} holds {len(entries):,} entries; the limit is {max_entries:,}")
        total = sum(info.file_size for info in entries)
        if total > max_bytes:
            raise SourceError(f"{shown} would unpack to {total / 1e9:.1f} GB; the limit is {max_bytes / 1e9:.1f} GB")
        if total > shutil.disk_usage(workdir).free:
            raise SourceError(f"{shown} would unpack to {total / 1e9:.1f} GB, more than the free disk space")
        root = Path(tmp)
        problems: list[Problem] = []
        for info in entries:
            if info.is_dir():
                continue
            if reason := unsafe_entry_reason(info, max_ratio):
                problems.append(Problem("", ascii(info.filename)[1:-1], reason))
                continue
            target = root.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            if reason := _unpack(archive, info, target, shown):
                target.unlink(missing_ok=True)
                problems.append(Problem("", info.filename, reason))
        yield root, problems


def _unpack(archive: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, shown: str) -> str | None:
    """Stream one entry to `target` in chunks; the reason it failed, or None.

    The running count stops any entry at the size it declared (whatever the zip library
    would hand us), and the declared sizes add up to at most the archive's limit, so the
    whole archive never writes more than that limit."""
    written = 0
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with archive.open(info) as source, open(target, "wb") as sink:
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                if written > info.file_size:
                    return "the zip entry holds more than it declares, so it was not unpacked"
                sink.write(chunk)
    except (zipfile.BadZipFile, EOFError, NotImplementedError, zlib.error):
        return "the zip entry is damaged or uses an unsupported compression, so it could not be unpacked"
    except OSError as err:
        if err.errno == errno.ENOSPC:
            raise SourceError(f"the disk filled up while unpacking {shown}; free some space and try again") from None
        return "the zip entry could not be written to disk"
    return None


def _remove_leftovers(workdir: Path) -> None:
    """Remove unpacking folders a killed import left behind (old enough to be no one's now)."""
    cutoff = time.time() - LEFTOVER_SECONDS
    for folder in workdir.glob(f"{PREFIX}*"):
        try:
            if folder.is_dir() and folder.stat().st_mtime < cutoff:
                shutil.rmtree(folder, ignore_errors=True)
        except OSError:
            continue
