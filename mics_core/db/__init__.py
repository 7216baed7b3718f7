"""Database access: one engine per URL, sessions, and schema migrations (Alembic).

SQLite is the embedded default (WAL, foreign keys on); PostgreSQL is the multi-user
deployment. The schema is created and upgraded only through Alembic migrations, so both
backends always carry the same, versioned schema.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

from mics_core.db import models

__all__ = ["Database", "connect", "describe_url", "init_db", "models", "session_scope"]

MIGRATIONS = Path(__file__).parent / "migrations"


class Database:
    """An engine and its session factory for one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = _make_engine(url)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False)

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: commits on success, rolls back everything on any error."""
        with self.sessions.begin() as session:
            yield session


def _make_engine(url: str) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database and parsed.database != ":memory:":
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, connect_args={"timeout": 30})

    @event.listens_for(engine, "connect")
    def _sqlite_pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    return engine


def describe_url(url: str) -> str:
    """The backend and the URL with its password masked, for showing to an administrator."""
    parsed = make_url(url)
    return f"{parsed.get_backend_name()} — `{parsed.render_as_string(hide_password=True)}`"


@lru_cache(maxsize=16)
def connect(url: str) -> Database:
    """The process-wide `Database` for `url` (engines are pooled, so make one per URL)."""
    return Database(url)


def init_db(url: str) -> Database:
    """Create or upgrade the schema to the newest migration and return the database."""
    from alembic import command
    from alembic.config import Config

    db = connect(url)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    return db


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    with connect(url).session() as session:
        yield session
