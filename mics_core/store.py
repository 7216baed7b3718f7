"""Content-addressed image files on disk.

Files are named by their sha256, so storing the same bytes twice is a no-op, a crashed
import leaves at most an unreferenced file (never a wrong one), and a GPU worker that
mounts the same data root sees exactly what the app sees. The database stores paths
relative to the data root; `resolve` refuses any path that would leave it.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from mics_core.config import Settings


def atomic_write(target: Path, write: Callable[[Path], None]) -> None:
    """Write `target` through `write(temporary path)` in the same folder, then rename it into
    place: readers see the old file or the whole new one, never a part; a failure leaves nothing."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@contextmanager
def file_lock(path: Path, wait: bool = True) -> Iterator[int | None]:
    """Hold an exclusive lock on the file `path` (created if missing) while the block runs.

    The operating system releases it when the holder dies, even by kill -9, so a crash
    never leaves it stuck. Yields the locked descriptor (a child process given it through
    `pass_fds` keeps the lock after we let go), or None when `wait` is False and another
    process holds it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield None
            return
        yield fd
    finally:
        os.close(fd)


class UnsafePathError(ValueError):
    """A stored path that points outside the data root."""


class ImageStore:
    """The image store of `settings`: files under `settings.store_root`, paths kept relative to the data root."""

    def __init__(self, settings: Settings) -> None:
        self.data_root = Path(settings.data_root)
        self.root = Path(settings.store_root)

    def put(self, data: bytes, kind: str, suffix: str, sha256: str | None = None) -> tuple[str, str]:
        """Store `data` under `kind/` ("images" or "thumbs"); return (sha256, relative path).

        `sha256` is the digest of `data` when the caller has it already (the importer hashed
        each file to find duplicates), so a file is hashed once."""
        digest = sha256 or hashlib.sha256(data).hexdigest()
        target = self.root / kind / digest[:2] / f"{digest}{suffix}"
        rel = target.relative_to(self.data_root).as_posix()
        if not target.exists():
            atomic_write(target, lambda tmp: tmp.write_bytes(data))
        return digest, rel

    def resolve(self, rel: str) -> Path:
        """Absolute path of a stored file; raises if `rel` escapes the data root."""
        root = self.data_root.resolve()
        path = (root / rel).resolve()
        if not path.is_relative_to(root):
            raise UnsafePathError(f"stored path {rel!r} is outside the data root")
        return path

    def read(self, rel: str) -> bytes:
        return self.resolve(rel).read_bytes()
