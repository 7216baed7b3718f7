"""Page tests: the real app script under `AppTest`, signed in as a real account of a role.

They run on SQLite only (the queries they drive are tested on both backends elsewhere).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

import mics_core.jobs.worker  # noqa: F401  (see below)
from mics_core.auth import create_user
from mics_core.config import Settings
from mics_core.db import Database, init_db
from ui import SignedIn

# The pages import torch and timm (through mics_core.jobs.worker); imported here, at
# collection, so that a page's first run does not spend those seconds (15 and more on a
# busy machine) after a test wrote a worker heartbeat and before the page reads it:
# live_workers only counts heartbeats from the last 3 * HEARTBEAT_SECONDS.

ROOT = Path(__file__).resolve().parents[2]


def button(app: AppTest, label: str):
    """The button with this label on the page."""
    return next(b for b in app.button if b.label == label)


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(db_url=f"sqlite:///{tmp_path / 'mics.db'}", data_root=tmp_path / "data")


@pytest.fixture
def db(settings: Settings) -> Database:
    return init_db(settings.db_url)


@pytest.fixture
def open_page(monkeypatch, settings: Settings, db: Database) -> Callable[..., AppTest]:
    """`open_page("pages/label.py", role="annotator")` → the page, run once, signed in."""
    monkeypatch.setenv("MICS_DB_URL", settings.db_url)
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    monkeypatch.setenv("MICS_BACKGROUND_WORKER", "0")  # a page test starts no worker process
    monkeypatch.delenv("MICS_AUTH", raising=False)
    accounts: dict[str, SignedIn] = {}

    def open_page(path: str | None = None, role: str = "admin") -> AppTest:
        if role not in accounts:
            with db.session() as session:
                user = create_user(session, f"{role}1", "a long password", role)
                accounts[role] = SignedIn(user.id, user.username, role)
        app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
        app.session_state["user"] = accounts[role]
        app.run()
        if path is not None:
            app.switch_page(path).run()
        return app

    return open_page
