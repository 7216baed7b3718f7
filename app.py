"""MICS Studio — Streamlit entry point: sign-in, navigation, the shared sidebar.

Until someone signs in, the only page is the sign-in screen and the navigation is hidden,
so no URL draws anything else; each page also checks the user itself (`ui.require`), for
the runs Streamlit makes without this script (the `pages/` folder, on a fresh server).
`.streamlit/config.toml` hides Streamlit's own list of that folder; signed in, the
sidebar lists the pages the role allows.

The first administrator is created on the server (`python -m mics_core users add
--admin NAME`); the browser offers it only when the server listens on localhost only and
is visited directly, not through a proxy.
`MICS_AUTH=none` runs without accounts, but only on a localhost-only server.
"""

from __future__ import annotations

from collections.abc import Callable

import streamlit as st

import ui as _ui
from mics_core.auth import (
    AuthError,
    allowed,
    auth_disabled,
    authenticate,
    create_first_admin,
    first_admin_in_browser,
    has_users,
    single_user,
)
from mics_core.db.models import User

st.set_page_config(page_title="MICS Studio", page_icon=":material/biotech:", layout="wide")

PAGES = [
    ("overview", "Overview", ":material/dashboard:"),
    ("import", "Import", ":material/upload:"),
    ("label", "Label", ":material/label:"),
    ("train", "Train", ":material/model_training:"),
    ("review", "Review", ":material/fact_check:"),
    ("explore", "Explore", ":material/scatter_plot:"),
    ("model", "Model quality", ":material/analytics:"),
    ("export", "Export", ":material/download:"),
    ("admin", "Admin", ":material/admin_panel_settings:"),
]
FIRST_ADMIN_COMMAND = "python -m mics_core users add --admin NAME"


def first_admin_screen() -> None:
    st.title("Welcome to MICS Studio")
    if not first_admin_in_browser(st.get_option("server.address"), _ui.through_proxy()):
        st.write("There is no administrator yet. Whoever runs the server creates the first one there:")
        st.code(FIRST_ADMIN_COMMAND, language="bash")
        st.write("Then reload this page and sign in.")
        st.caption("This screen offers to create it only on a server that listens on localhost only, visited directly.")
        return
    st.write("Create the administrator account. You can add colleagues' accounts afterwards under **Admin**.")
    with st.form("first_admin"):
        username = st.text_input("User name")
        password = st.text_input("Password (at least 8 characters)", type="password")
        repeat = st.text_input("Repeat the password", type="password")
        if st.form_submit_button("Create administrator", type="primary"):
            if password != repeat:
                st.error("The two passwords differ.")
                return
            sign_in(_ui.attempt(lambda session: create_first_admin(session, username, password)))


def sign_in_form() -> None:
    st.title("MICS Studio")
    with st.form("sign_in"):
        username = st.text_input("User name")
        password = st.text_input("Password", type="password")
        if st.form_submit_button("Sign in", type="primary"):
            client = _ui.client_id()
            sign_in(_ui.attempt(lambda session: authenticate(session, username, password, client)))


def sign_in(account: User | None) -> None:
    """Start the session of `account`, unless it was refused (the reason is on screen)."""
    if account is not None:
        _ui.sign_in_as(account)
        st.rerun()


def sign_in_screen() -> None:
    """The one page before sign-in: the first-run screen while there are no accounts."""
    with _ui.session() as session:
        accounts = has_users(session)
    if accounts:
        sign_in_form()
    else:
        first_admin_screen()


def refusal_screen(message: str) -> Callable[[], None]:
    def refused() -> None:
        st.error(message)

    return refused


def signed_in() -> bool:
    """Whether someone is signed in (in single-user mode, always); raises AuthError for a
    `MICS_AUTH` this server may not run with."""
    if auth_disabled(_ui.settings().auth_mode, st.get_option("server.address")):
        if st.session_state.get("user") is None:
            with _ui.session() as session:
                _ui.sign_in_as(single_user(session))
        return True
    return _ui.refresh_user() is not None


try:
    entered = signed_in()
    outside = sign_in_screen
except AuthError as err:
    entered, outside = False, refusal_screen(str(err))

if entered:
    role = _ui.user().role
    pages = [st.Page(f"pages/{name}.py", title=title, icon=icon) for name, title, icon in PAGES if allowed(role, name)]
    navigation = st.navigation(pages, position="hidden")
    for page in pages:
        st.sidebar.page_link(page)
    _ui.sidebar()
    if _ui.settings().auth_mode != "none" and st.sidebar.button("Sign out", icon=":material/logout:"):
        st.session_state.clear()  # nothing of this user's session (selections, reports) stays in the tab
        st.rerun()
    navigation.run()
else:
    st.navigation([st.Page(outside, title="Sign in", url_path="sign-in")], position="hidden").run()
