"""The content-addressed store."""

from __future__ import annotations

import hashlib

import pytest

from mics_core.store import ImageStore, UnsafePathError


def test_put_is_content_addressed_and_idempotent(tmp_path):
    store = ImageStore(tmp_path)
    digest, rel = store.put(b"abc", "images", ".png")
    assert digest == hashlib.sha256(b"abc").hexdigest()
    assert rel == f"store/images/{digest[:2]}/{digest}.png"
    assert store.put(b"abc", "images", ".png") == (digest, rel)
    assert store.read(rel) == b"abc"
    assert not list(tmp_path.rglob(".incoming-*"))


@pytest.mark.parametrize("rel", ["../outside.png", "/etc/passwd", "store/../../x"])
def test_resolve_refuses_paths_outside_the_data_root(tmp_path, rel):
    with pytest.raises(UnsafePathError):
        ImageStore(tmp_path / "root").resolve(rel)
