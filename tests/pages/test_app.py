"""Sign-in, the first-run admin, roles in the navigation, and single-user mode."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

from mics_core.auth import create_user

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fresh(monkeypatch, settings, db):
    monkeypatch.setenv("MICS_DB_URL", settings.db_url)
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    monkeypatch.delenv("MICS_AUTH", raising=False)
    return lambda: AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()


def _fill(app: AppTest, *values: str) -> None:
    for box, value in zip(app.text_input, values, strict=True):
        box.input(value)


def test_first_run_creates_the_first_admin_and_signs_them_in(fresh):
    app = fresh()
    assert app.title[0].value == "Welcome to MICS Studio"
    _fill(app, "dr.kim", "a long password", "a long password")
    app.button[0].click().run()
    assert not app.exception
    assert app.title[0].value == "Overview"
    assert app.session_state["user"].role == "admin"


def test_first_run_refuses_mismatched_or_short_passwords(fresh):
    app = fresh()
    _fill(app, "dr.kim", "a long password", "another password")
    app.button[0].click().run()
    assert "differ" in app.error[0].value
    _fill(app, "dr.kim", "short", "short")
    app.button[0].click().run()
    assert "at least 8" in app.error[0].value


def test_sign_in_with_a_wrong_password_is_refused_and_a_right_one_works(fresh, db):
    with db.session() as session:
        create_user(session, "ana", "correct horse", "annotator")
    app = fresh()
    assert app.title[0].value == "MICS Studio"
    _fill(app, "ana", "wrong horse")
    app.button[0].click().run()
    assert app.error[0].value == "Wrong user name or password."
    _fill(app, "ana", "correct horse")
    app.button[0].click().run()
    assert app.title[0].value == "Overview"


def test_an_annotator_cannot_reach_admin_import_or_review(open_page):
    app = open_page(role="annotator")
    for page in ("pages/admin.py", "pages/import.py", "pages/review.py"):
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            app.switch_page(page)
        # and the page itself refuses, should it be run some other way
        direct = AppTest.from_file(str(ROOT / page), default_timeout=60)
        direct.session_state["user"] = app.session_state["user"]
        direct.run()
        assert "You do not have access" in direct.error[0].value
    app = open_page("pages/label.py", role="annotator")
    assert not app.exception and app.title[0].value == "Label"


def test_a_deactivated_account_is_signed_out_on_its_next_click(open_page, db):
    app = open_page("pages/label.py", role="annotator")
    from mics_core.auth import set_role

    with db.session() as session:
        set_role(session, app.session_state["user"].id, "annotator", active=False)
    app.run()
    assert "You do not have access" in app.error[0].value
    assert "user" not in app.session_state


@pytest.fixture
def server_address():
    before = config.get_option("server.address")
    yield lambda value: config.set_option("server.address", value)
    config.set_option("server.address", before)


def test_single_user_mode_needs_a_localhost_server(fresh, monkeypatch, server_address):
    monkeypatch.setenv("MICS_AUTH", "none")
    server_address("0.0.0.0")
    app = fresh()
    assert "only allowed when the server listens on localhost" in app.error[0].value
    server_address("localhost")
    app = fresh()
    assert not app.exception and app.title[0].value == "Overview"
    assert app.session_state["user"].username == "local"


@pytest.mark.parametrize("script", [*sorted(p.name for p in (ROOT / "pages").glob("*.py")), "../app.py"])
def test_screens_leave_every_query_to_mics_core(script):
    """Pages are thin: they call mics_core, which owns every query (a Session type hint is all they import)."""
    source = (ROOT / "pages" / script).read_text()
    imports = [line for line in source.splitlines() if "sqlalchemy" in line]
    assert imports in ([], ["from sqlalchemy.orm import Session"])
    assert not re.search(r"\bselect\(", source)
