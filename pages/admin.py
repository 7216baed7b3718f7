"""Admin: accounts and roles, the class list, the database and the workers."""

from __future__ import annotations

import pandas as pd
import streamlit as st

import ui as _ui
from mics_core.auth import accounts, create_user, set_role
from mics_core.db import describe_url
from mics_core.db.models import ROLES
from mics_core.jobs.queue import job_counts
from mics_core.jobs.worker import live_workers
from mics_core.labels import add_classes, class_names

me = _ui.require("admin")
st.title("Admin")
users_tab, classes_tab, system_tab = st.tabs(["Users", "Classes", "Database and workers"])

with users_tab:
    with _ui.session() as session:
        people = [(u.id, u.username, u.role, u.active, u.created_at) for u in accounts(session)]
    st.dataframe(
        pd.DataFrame(people, columns=["id", "user", "role", "active", "created"]), hide_index=True, width="stretch"
    )
    with st.form("change_role"):
        st.write("Change a role, or deactivate an account (its labels stay).")
        left, middle, right = st.columns(3)
        names = {uid: name for uid, name, *_ in people}
        who = left.selectbox("User", list(names), format_func=names.get)
        role = middle.selectbox("Role", ROLES)
        active = right.checkbox("Active", value=True)
        if st.form_submit_button("Save") and _ui.attempt(lambda session: set_role(session, who, role, active)):
            st.success(f"{names[who]} is now {'an active' if active else 'an inactive'} {role}.")
    with st.form("new_user", clear_on_submit=True):
        st.write("Add a user")
        left, middle, right = st.columns(3)
        username = left.text_input("User name")
        password = middle.text_input("Initial password", type="password")
        role = right.selectbox("Role", ROLES, key="new_role")
        if st.form_submit_button("Add user") and _ui.attempt(
            lambda session: create_user(session, username, password, role)
        ):
            st.success(f"Added {username.strip()} as {role}.")

with classes_tab:
    with _ui.session() as session:
        classes = class_names(session)
    st.write("Classes, in the order of their number keys on the Label screen:")
    st.dataframe(pd.DataFrame({"key": range(1, len(classes) + 1), "class": classes}), hide_index=True, width="stretch")
    with st.form("add_class", clear_on_submit=True):
        new = st.text_input("New class name")
        submitted = st.form_submit_button("Add class") and new.strip()
        added = _ui.attempt(lambda session: add_classes(session, [new])) if submitted else None
        if added is not None:
            st.success(f"Added {added[0]}." if added else f"{new.strip()} is already in the list.")
            st.rerun()
    st.caption("Classes are never deleted or renamed here: existing labels and model versions refer to them.")

with system_tab:
    st.write(f"**Database:** {describe_url(_ui.settings().db_url)}")
    with _ui.session() as session:
        counts = job_counts(session)
    st.write("**Jobs:** " + (", ".join(f"{n} {status}" for status, n in counts.items()) or "none yet"))
    workers = live_workers(_ui.database())
    if workers:
        st.dataframe(
            pd.DataFrame(
                [(w.id, w.host, w.device, w.started_at, w.heartbeat_at, w.job_id) for w in workers],
                columns=["worker", "host", "device", "started", "last heartbeat", "job"],
            ),
            hide_index=True,
            width="stretch",
        )
    else:
        st.write("**Workers:** none running. The Train screen starts one on this machine when needed.")
