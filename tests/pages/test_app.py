"""Sign-in, the first-run admin, roles in the navigation, and single-user mode."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import streamlit.commands.navigation as st_navigation
from streamlit import config
from streamlit.testing.v1 import AppTest

from mics_core.auth import THROTTLE, create_user
from tests.conftest import make_project

ROOT = Path(__file__).resolve().parents[2]
PAGES = sorted(p.name for p in (ROOT / "pages").glob("*.py"))


@pytest.fixture
def server_address():
    before = config.get_option("server.address")
    yield lambda value: config.set_option("server.address", value)
    config.set_option("server.address", before)


@pytest.fixture
def fresh(monkeypatch, settings, db, server_address):
    """A new session of the app on a localhost-only server (where the browser may make the first admin)."""
    monkeypatch.setenv("MICS_DB_URL", settings.db_url)
    monkeypatch.setenv("MICS_DATA_ROOT", str(settings.data_root))
    monkeypatch.delenv("MICS_AUTH", raising=False)
    server_address("localhost")
    THROTTLE.clear()
    yield lambda: AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).run()
    THROTTLE.clear()


def _fill(app: AppTest, *values: str) -> None:
    for box, value in zip(app.text_input, values, strict=True):
        box.input(value)


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "192.168.1.10"])
def test_on_a_reachable_server_the_first_admin_is_made_on_the_command_line_not_in_the_browser(
    fresh, server_address, address
):
    server_address(address)
    app = fresh()
    assert app.title[0].value == "Welcome to MICS Studio"
    assert not app.text_input and not app.button
    assert app.code[0].value == "python -m mics_core users add --admin NAME"


def test_through_a_proxy_the_first_admin_is_made_on_the_command_line_even_on_localhost(fresh, monkeypatch):
    import ui

    monkeypatch.setattr(ui, "through_proxy", lambda: True)
    app = fresh()
    assert not app.text_input and app.code[0].value == "python -m mics_core users add --admin NAME"


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


def test_single_user_mode_needs_a_localhost_server(fresh, monkeypatch, server_address):
    monkeypatch.setenv("MICS_AUTH", "none")
    server_address("0.0.0.0")
    app = fresh()
    assert "only allowed when the server listens on localhost" in app.error[0].value
    server_address("localhost")
    app = fresh()
    assert not app.exception and app.title[0].value == "Overview"
    assert app.session_state["user"].username == "local"


@pytest.mark.parametrize("script", [*PAGES, "../app.py"])
def test_screens_leave_every_query_to_mics_core(script):
    """Pages are thin: they call mics_core, which owns every query (a Session type hint is all they import)."""
    source = (ROOT / "pages" / script).read_text()
    imports = [line for line in source.splitlines() if "sqlalchemy" in line]
    assert imports in ([], ["from sqlalchemy.orm import Session"])
    assert not re.search(r"\bselect\(", source)


@pytest.fixture
def project(fresh, db, settings, tmp_path):
    """Cases, labels and an account: what a visitor must not see before signing in."""
    make_project(db, settings, tmp_path)
    with db.session() as session:
        create_user(session, "ana", "correct horse", "admin")
    return fresh


@pytest.mark.parametrize("page", PAGES)
def test_before_sign_in_no_page_shows_anything_but_a_refusal(project, page):
    """A URL opened on a fresh server: Streamlit runs the page file itself, app.py not at all."""
    app = AppTest.from_file(str(ROOT / "app.py"), default_timeout=60)
    app.switch_page(f"pages/{page}").run()
    assert not app.exception
    assert [e.value for e in app.error] == [
        "You do not have access to this screen. Sign in again, or ask an administrator for a role that includes it."
    ]
    assert not app.title and not app.dataframe and not app.metric and not app.table and not app.markdown
    assert not app.sidebar.children


def test_before_sign_in_the_only_page_is_the_sign_in_form(project):
    app = project()
    assert not app.exception
    assert app.title[0].value == "MICS Studio" and [b.label for b in app.button] == ["Sign in"]
    assert [page["page_name"] for page in app._registered_pages.values()] == ["Sign in"]
    assert not app.sidebar.children
    assert not app.dataframe and not app.metric
    assert "None" not in [m.value for m in app.markdown]  # no stray value under the form
    for page in PAGES:
        with pytest.raises(ValueError, match="Could not find a navigation page"):
            app.switch_page(f"pages/{page}")


def test_no_navigation_ever_lists_pages_before_sign_in(project, monkeypatch):
    """Every navigation the app (or Streamlit's pages/ folder mode) sends is hidden: the
    sidebar shows no file list."""
    sent: list[tuple[str, int]] = []
    original = st_navigation._navigation

    def recording(pages, *, position, expanded):
        sent.append((position, len(pages)))
        return original(pages, position=position, expanded=expanded)

    monkeypatch.setattr(st_navigation, "_navigation", recording)
    app = project()
    AppTest.from_file(str(ROOT / "app.py"), default_timeout=60).switch_page("pages/overview.py").run()
    assert sent and {position for position, _ in sent} == {"hidden"}
    assert tomllib.loads((ROOT / ".streamlit" / "config.toml").read_text())["client"]["showSidebarNavigation"] is False
    # signed in, the page list is the app's own links, the role's pages only
    _fill(app, "ana", "correct horse")
    app.button[0].click().run()
    links = [link.label for link in app.sidebar.get("page_link")]
    assert links == ["Overview", "Import", "Label", "Train", "Review", "Explore", "Model quality", "Export", "Admin"]


def test_repeated_failed_sign_ins_make_the_form_wait(project):
    app = project()
    for _ in range(5):
        _fill(app, "ana", "wrong horse")
        app.button[0].click().run()
        assert app.error[0].value == "Wrong user name or password."
    _fill(app, "ana", "correct horse")
    app.button[0].click().run()
    assert app.error[0].value.startswith("Too many failed sign-ins; wait")
    assert "user" not in app.session_state
