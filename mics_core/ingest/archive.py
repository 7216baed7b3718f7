"""Unpacking a zip upload without trusting it.

Every entry name is checked before anything is written (no `..`, no absolute or drive
paths, no links, no control characters), the declared total size and entry count are
capped before unpacking (zip bombs), and files are written only to paths we build
ourselves, never with `extractall`.
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from tempfile import TemporaryDirectory

from mics_core.ingest.sources import Problem, SourceError

_DRIVE = re.compile(r"^[A-Za-z]:")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def unsafe_entry_reason(info: zipfile.ZipInfo) -> str | None:
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
    return None


@contextmanager
def unpacked_zip(path: Path, max_bytes: int, max_entries: int) -> Iterator[tuple[Path, list[Problem]]]:
    """Unpack `path` into a temporary folder removed afterwards; yield it and the rejected entries."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError):
        raise SourceError(f"{path.name} is not a readable zip file") from None
    with archive, TemporaryDirectory(prefix="mics-zip-") as tmp:
        entries = archive.infolist()
        if len(entries) > max_entries:
            raise SourceError(f"{path.name} holds {len(entries)} entries; the limit is {max_entries}")
        total = sum(info.file_size for info in entries)
        if total > max_bytes:
            raise SourceError(
                f"{path.name} would unpack to {total / 1e9:.1f} GB; the limit is {max_bytes / 1e9:.1f} GB"
            )
        root = Path(tmp)
        problems: list[Problem] = []
        for info in entries:
            if info.is_dir():
                continue
            if reason := unsafe_entry_reason(info):
                problems.append(Problem("", ascii(info.filename)[1:-1], reason))
                continue
            target = root.joinpath(*PurePosixPath(info.filename.replace("\\", "/")).parts)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.open(info) as source, open(target, "wb") as sink:
                    shutil.copyfileobj(source, sink)
            except (zipfile.BadZipFile, OSError, EOFError) as exc:
                target.unlink(missing_ok=True)
                problems.append(Problem("", info.filename, f"the zip entry is damaged ({exc})"))
        yield root, problems
