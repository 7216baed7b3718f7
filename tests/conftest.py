"""Fixtures shared by the suite.

`db_url` runs a test once on SQLite and once on PostgreSQL (127.0.0.1:5432, database
`test`, a schema of its own that is dropped afterwards). When PostgreSQL is unreachable
those runs skip with the reason, unless MICS_REQUIRE_POSTGRES=1 (CI), where they fail.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image

from mics_core.config import Settings
from mics_core.db import Database, init_db

PG_ADMIN_URL = os.environ.get("MICS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def _postgres_unavailable() -> str | None:
    try:
        engine = sa.create_engine(PG_ADMIN_URL, connect_args={"connect_timeout": 3})
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:  # any failure to connect means "not here"
        return f"PostgreSQL not reachable at {PG_ADMIN_URL}: {str(exc).splitlines()[0]}"
    return None


@pytest.fixture(scope="session")
def postgres_reason() -> str | None:
    return _postgres_unavailable()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_reason: str | None) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'mics.db'}"
        return
    if postgres_reason:
        if os.environ.get("MICS_REQUIRE_POSTGRES") == "1":
            pytest.fail(postgres_reason)
        pytest.skip(postgres_reason)
    schema = f"t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(PG_ADMIN_URL)
    with admin.begin() as conn:
        conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')
    try:
        yield f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}"
    finally:
        from mics_core.db import connect

        connect(f"{PG_ADMIN_URL}?options=-csearch_path%3D{schema}").engine.dispose()
        with admin.begin() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA "{schema}" CASCADE')
        admin.dispose()


@pytest.fixture
def settings(db_url: str, tmp_path: Path) -> Settings:
    return Settings(db_url=db_url, data_root=tmp_path / "data")


@pytest.fixture
def db(settings: Settings) -> Database:
    return init_db(settings.db_url)


def write_image(path: Path, seed: int = 0, size: tuple[int, int] = (24, 20), fmt: str | None = None) -> Path:
    """A small noise image, unique per seed, in the format the suffix (or `fmt`) names."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format=fmt)
    return path
