"""What every screen shares: the database, the signed-in user, the sidebar, cached images.

Pages stay thin: they call `mics_core` for every decision and this module for the
Streamlit plumbing that would otherwise repeat on each page.
"""

from __future__ import annotations

import io
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import streamlit as st
from PIL import Image as PILImage
from sqlalchemy.orm import Session

from mics_core.auth import allowed
from mics_core.config import Settings
from mics_core.db import Database, init_db
from mics_core.db.models import User
from mics_core.errors import RequestRefused
from mics_core.jobs.queue import active_jobs
from mics_core.registry import active_version
from mics_core.stats import dataset_stats
from mics_core.store import ImageStore

T = TypeVar("T")


@dataclass(frozen=True)
class SignedIn:
    id: int
    username: str
    role: str


@st.cache_resource
def _database(url: str) -> Database:
    return init_db(url)


def settings() -> Settings:
    return Settings.from_env()


def database() -> Database:
    return _database(settings().db_url)


def store() -> ImageStore:
    return ImageStore(settings())


@contextmanager
def session() -> Iterator[Session]:
    with database().session() as opened:
        yield opened


def attempt(change: Callable[[Session], T]) -> T | None:
    """Run `change` in one transaction; when the library refuses it, show why and return None."""
    try:
        with session() as opened:
            return change(opened)
    except RequestRefused as err:
        st.error(str(err))
        return None


def user() -> SignedIn:
    return st.session_state["user"]


def sign_in_as(account: User) -> None:
    st.session_state["user"] = SignedIn(account.id, account.username, account.role)


def remote_address() -> str | None:
    """The browser's address as Streamlit reports it (None from localhost; only a string
    counts, AppTest's stand-in runtime gives none)."""
    address = st.context.ip_address
    return address if isinstance(address, str) else None


def client_id() -> str:
    """Who is signing in, for the sign-in throttle: the connection's address, or, where
    Streamlit gives none (localhost, or a reverse proxy on this host), this browser session."""
    address = remote_address()
    if address:
        return f"ip:{address}"
    return "session:" + st.session_state.setdefault("_client", secrets.token_hex(8))


FORWARDING_HEADERS = ("X-Forwarded-For", "Forwarded", "X-Real-Ip")


def through_proxy() -> bool:
    """Whether this browser did not connect from this machine directly: it has an address
    Streamlit reports (not localhost), or a proxy forwarded the request."""
    headers = st.context.headers
    return remote_address() is not None or any(name in headers for name in FORWARDING_HEADERS)


def refresh_user() -> SignedIn | None:
    """The signed-in user as the database has it now (a role change or deactivation takes
    effect on the next click, not the next sign-in)."""
    current = st.session_state.get("user")
    if current is None:
        return None
    with session() as opened:
        account = opened.get(User, current.id)
        if account is None or not account.active:
            st.session_state.pop("user", None)
            return None
        sign_in_as(account)
    return user()


def require(page: str) -> SignedIn:
    """Stop the page with a clear message unless the signed-in user may open it."""
    current = refresh_user()
    if current is None or not allowed(current.role, page):
        st.error(
            "You do not have access to this screen. Sign in again, or ask an administrator for a role that includes it."
        )
        st.stop()
    return current


@st.cache_data(max_entries=512, show_spinner=False)
def image_png(path: str, zoom: int = 1, size: int | None = None) -> bytes:
    """An image file as PNG bytes, optionally centre-cropped by `zoom` and shrunk to `size`."""
    with PILImage.open(path) as opened:
        image = opened.convert("RGB")
    if zoom > 1:
        w, h = image.size
        cw, ch = w // zoom, h // zoom
        image = image.crop(((w - cw) // 2, (h - ch) // 2, (w + cw) // 2, (h + ch) // 2))
    if size:
        image.thumbnail((size, size))
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def explore_selection(key: str, message: str, back: str) -> list[int] | None:
    """The case ids sent here from Explore under `key`, with a banner and a button that drops them."""
    selection = st.session_state.get(key)
    if selection:
        st.info(message.format(n=len(selection)))
        if st.button(back):
            st.session_state.pop(key)
            st.rerun()
    return selection


def start_background_worker() -> None:
    """Queued work and no worker alive (the prepare job an import queued, say): start one here."""
    from mics_core.jobs.worker import ensure_local_worker, live_workers

    if not live_workers(database()):
        with st.spinner("Starting a worker for the queued work…"):
            ensure_local_worker(settings())


def sidebar() -> None:
    """Dataset size, labelled count, the active model and whether a job is running."""
    with session() as opened:
        stats = dataset_stats(opened)
        version = active_version(opened)
        running = active_jobs(opened)
        summary = (version.id, version.metrics.get("accuracy")) if version else None
    if running and settings().background_worker:
        start_background_worker()
    with st.sidebar:
        left, right = st.columns(2)
        left.metric("Cases", f"{stats.cases:,}")
        right.metric("Labelled", f"{stats.labelled:,}")
        if summary is None:
            st.caption("No model yet: label some cases, then retrain.")
        else:
            accuracy = f"{summary[1]:.0%}" if summary[1] is not None else "n/a"
            st.caption(f"Active model: version {summary[0]} · held-out accuracy {accuracy}")
        st.caption("⏳ A training job is queued or running" if running else "No job running")
        current = st.session_state.get("user")
        if current is not None:
            st.caption(f"Signed in as **{current.username}** ({current.role})")
