"""Every setting in one place, read from `MICS_*` environment variables.

Deployments change behaviour through the environment (or a CLI flag that overrides it);
code never reads `os.environ` anywhere else.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DB_URL = "sqlite:///data/mics.db"


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ValueError(f"{name} must be a whole number, got {raw!r}") from exc


@dataclass(frozen=True)
class Settings:
    """Runtime settings; build with `Settings.from_env()`."""

    db_url: str = DEFAULT_DB_URL
    data_root: Path = field(default_factory=lambda: Path("data"))
    # Images above this many pixels are refused (decompression-bomb guard).
    # 40 MP is ~10x the largest endoscopy frames we know of.
    max_image_pixels: int = 40_000_000
    # Zip uploads: refuse archives that would unpack to more than this.
    max_unzipped_bytes: int = 20 * 1024**3
    max_zip_entries: int = 200_000
    thumbnail_size: int = 256

    @property
    def store_root(self) -> Path:
        return self.data_root / "store"

    @property
    def demo_root(self) -> Path:
        return self.data_root / "demo"

    @classmethod
    def from_env(cls, db_url: str | None = None) -> Settings:
        """Settings from the environment; an explicit `db_url` (a CLI flag) wins."""
        return cls(
            db_url=db_url or os.environ.get("MICS_DB_URL") or DEFAULT_DB_URL,
            data_root=Path(os.environ.get("MICS_DATA_ROOT") or "data"),
            max_image_pixels=_env_int("MICS_MAX_IMAGE_PIXELS", cls.max_image_pixels),
            max_unzipped_bytes=_env_int("MICS_MAX_UNZIPPED_BYTES", cls.max_unzipped_bytes),
            max_zip_entries=_env_int("MICS_MAX_ZIP_ENTRIES", cls.max_zip_entries),
        )
