"""MICS Studio — Streamlit entry point: sign-in, navigation, the shared sidebar.

`MICS_AUTH=none` runs without accounts, but only on a server that listens on localhost;
otherwise every screen needs a signed-in user, and the first run creates the first admin.
"""

from __future__ import annotations

import streamlit as st

import ui as _ui
from mics_core.auth import AuthError, allowed, auth_disabled, authenticate, create_first_admin, has_users, single_user
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


def first_admin_form() -> None:
    st.title("Welcome to MICS Studio")
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
            sign_in(_ui.attempt(lambda session: authenticate(session, username, password)))


def sign_in(account: User | None) -> None:
    """Start the session of `account`, unless it was refused (the reason is on screen)."""
    if account is not None:
        _ui.sign_in_as(account)
        st.rerun()


def signed_in() -> bool:
    """Whether someone is signed in; otherwise the sign-in (or first-run) screen is drawn."""
    try:
        no_accounts = auth_disabled(_ui.settings().auth_mode, st.get_option("server.address"))
    except AuthError as err:
        st.error(str(err))
        return False
    if no_accounts:
        if st.session_state.get("user") is None:
            with _ui.session() as session:
                _ui.sign_in_as(single_user(session))
        return True
    if _ui.refresh_user() is not None:
        return True
    with _ui.session() as session:
        accounts = has_users(session)
    first_admin_form() if not accounts else sign_in_form()
    return False


if signed_in():
    role = _ui.user().role
    navigation = st.navigation(
        [st.Page(f"pages/{name}.py", title=title, icon=icon) for name, title, icon in PAGES if allowed(role, name)]
    )
    _ui.sidebar()
    if _ui.settings().auth_mode != "none" and st.sidebar.button("Sign out", icon=":material/logout:"):
        st.session_state.clear()  # nothing of this user's session (selections, reports) stays in the tab
        st.rerun()
    navigation.run()
