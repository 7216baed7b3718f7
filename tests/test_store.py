"""The content-addressed store."""

from __future__ import annotations

import hashlib

import pytest

from mics_core.config import Settings
from mics_core.store import ImageStore, UnsafePathError


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = ImageStore(Settings(data_root=tmp_path))
    digest, rel = store.put(b"abc", "images", ".png")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert rel == f"store/images/{digest[:2]}/{digest}.png"
    assert store.put(b"abc", "images", ".png") == (digest, rel)
    assert store.read(rel) == b"abc"
    assert not list(tmp_path.rglob(".incoming-*"))


@pytest.mark.parametrize("rel", ["../outside.png", "/etc/passwd", "store/../../x"])
def test_resolve_refuses_paths_outside_the_data_root(tmp_path, rel):
    with pytest.raises(UnsafePathError):
        ImageStore(Settings(data_root=tmp_path / "root")).resolve(rel)


def test_atomic_write_leaves_nothing_when_the_writer_fails(tmp_path):
    from mics_core.store import atomic_write

    target = tmp_path / "sub" / "model.bin"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"v1"))

    def broken(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(target, broken)
    assert target.read_bytes() == b"v1" and list(target.parent.iterdir()) == [target]


def test_put_takes_a_digest_the_caller_already_has(tmp_path):
    store = ImageStore(Settings(data_root=tmp_path))
    digest = hashlib.sha256(b"abc").hexdigest()
    assert store.put(b"abc", "images", ".png", sha256=digest) == store.put(b"abc", "images", ".png")
