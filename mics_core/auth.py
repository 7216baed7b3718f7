"""Local accounts: salted password hashes (argon2), roles, and who may do what.

Roles are ordered: an admin can do everything a reviewer can, a reviewer everything an
annotator can. Pages ask `allowed(role, page)` rather than comparing role names.

Sign-in is throttled per account name and per client (`SignInThrottle`), and an unknown
name costs the same argon2 verification as a known one, so neither guessing nor timing
tells which names exist. Accounts are created one at a time (`_lock_accounts`), so
concurrent first-run requests make exactly one administrator.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
from collections.abc import Callable
from functools import lru_cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import false, func, select, text, update
from sqlalchemy.orm import Session

from mics_core.db.models import ROLES, User
from mics_core.errors import RequestRefused

LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
SINGLE_USER = "local"
MIN_PASSWORD = 8

# The least role that may open each page; pages not listed are open to every signed-in user.
PAGE_ROLES = {"import": "reviewer", "review": "reviewer", "admin": "admin"}

# Failed sign-ins a name (or a client) may make before it has to wait; the wait then
# starts at FIRST_WAIT_S and doubles with each further failure, up to MAX_WAIT_S. Failures
# older than WINDOW_S are forgotten.
ACCOUNT_FREE_FAILURES = 5
CLIENT_FREE_FAILURES = 20
FIRST_WAIT_S = 30.0
MAX_WAIT_S = 15 * 60.0
WINDOW_S = 15 * 60.0

# Any constant: PostgreSQL's transaction-scoped lock that serialises account creation.
_ACCOUNTS_LOCK_KEY = 0x4D494353

_hasher = PasswordHasher()


class AuthError(RequestRefused):
    """A sign-in or account change that cannot be done; the message says why."""


class SignInThrottle:
    """Recent failed sign-ins per key ("account:NAME", "client:ID") in this server process.

    In memory on purpose: the Streamlit server is one process, and a restart forgetting the
    counts costs an attacker a restart they cannot cause. Thread-safe (one thread per session).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._failures: dict[str, list[float]] = {}
        self._lock = threading.Lock()

    def _recent(self, key: str, now: float) -> list[float]:
        recent = [t for t in self._failures.get(key, []) if now - t < WINDOW_S]
        if recent:
            self._failures[key] = recent
        else:
            self._failures.pop(key, None)
        return recent

    def wait_s(self, key: str, free: int) -> float:
        """Seconds `key` must still wait before its next attempt (0: it may try now)."""
        with self._lock:
            now = self._clock()
            recent = self._recent(key, now)
            if len(recent) < free:
                return 0.0
            wait = min(FIRST_WAIT_S * 2 ** (len(recent) - free), MAX_WAIT_S)
            return max(0.0, recent[-1] + wait - now)

    def failed(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            self._recent(key, now)
            self._failures.setdefault(key, []).append(now)

    def forget(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)

    def clear(self) -> None:
        """Forget every failure (tests; an administrator's restart does the same)."""
        with self._lock:
            self._failures.clear()


THROTTLE = SignInThrottle()


@lru_cache(maxsize=1)
def _dummy_hash() -> str:
    """A hash no password matches; unknown names are verified against it, so they take as long."""
    return _hasher.hash(secrets.token_urlsafe(32))


def _verify(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; without a usable hash, the same work against a dummy."""
    try:
        matched = _hasher.verify(password_hash or _dummy_hash(), password)
    except (VerificationError, InvalidHashError):
        return False
    return matched and password_hash is not None


def _lock_accounts(session: Session) -> None:
    """Hold the lock that makes "check, then create an account" one step, till the transaction ends.

    PostgreSQL: a transaction-scoped advisory lock. SQLite: a write that changes nothing,
    which takes the database's single write lock before the check reads.
    """
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _ACCOUNTS_LOCK_KEY})
    else:
        session.execute(update(User).where(false()).values(role=User.role))


def rank(role: str) -> int:
    return ROLES.index(role)


def allowed(role: str, page: str) -> bool:
    return rank(role) >= rank(PAGE_ROLES.get(page, "annotator"))


def has_users(session: Session) -> bool:
    return bool(session.scalar(select(func.count()).select_from(User).where(User.password_hash.is_not(None))))


def accounts(session: Session) -> list[User]:
    """Every account, oldest first, but the single-user mode's one (it is nobody's to manage)."""
    return list(session.scalars(select(User).where(User.username != SINGLE_USER).order_by(User.id)))


def create_user(session: Session, username: str, password: str, role: str = "annotator") -> User:
    username = username.strip()
    if not username or len(username) > 100:
        raise AuthError("A user name must be 1 to 100 characters.")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in username):
        raise AuthError("A user name cannot contain control characters (line breaks, tabs…).")
    if username.lower() == SINGLE_USER:
        raise AuthError(f"The user name {SINGLE_USER!r} is reserved for single-user mode.")
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"The password must be at least {MIN_PASSWORD} characters.")
    _lock_accounts(session)
    if session.scalar(select(User).where(func.lower(User.username) == username.lower())):
        raise AuthError(f"The user name {username!r} is taken.")
    user = User(username=username, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def create_first_admin(session: Session, username: str, password: str) -> User:
    """The first-run account; refused once any account with a password exists. The check and
    the insert hold the accounts lock, so of concurrent calls exactly one succeeds."""
    _lock_accounts(session)
    if has_users(session):
        raise AuthError("An administrator already exists; sign in instead.")
    return create_user(session, username, password, "admin")


def first_admin_in_browser(server_address: str | None, through_proxy: bool = False) -> bool:
    """Whether the browser may create the first administrator: only on a server that listens
    on localhost, visited directly (not `through_proxy`), where whoever opens it is whoever
    started it. Elsewhere the first admin is made on the server:
    `python -m mics_core users add --admin NAME`."""
    return (server_address or "") in LOCAL_ADDRESSES and not through_proxy


def authenticate(
    session: Session, username: str, password: str, client: str | None = None, throttle: SignInThrottle = THROTTLE
) -> User:
    """The active user with this name and password; one message for every failure, so the
    screen does not tell which user names exist.

    After repeated failures for this name (or from this `client`), attempts are refused
    for a while without checking the password.
    """
    name = username.strip().lower()
    keys = {f"account:{name}": ACCOUNT_FREE_FAILURES}
    if client:
        keys[f"client:{client}"] = CLIENT_FREE_FAILURES
    wait = max(throttle.wait_s(key, free) for key, free in keys.items())
    if wait > 0:
        raise AuthError(f"Too many failed sign-ins; wait {math.ceil(wait)} s, then try again.")
    user = session.scalar(select(User).where(func.lower(User.username) == name))
    usable = user is not None and user.active and user.password_hash
    if not _verify(user.password_hash if usable else None, password):
        for key in keys:
            throttle.failed(key)
        raise AuthError("Wrong user name or password.")
    throttle.forget(f"account:{name}")
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return user


def set_role(session: Session, user_id: int, role: str, active: bool = True) -> User:
    """Change a role or (de)activate; the last active admin cannot be demoted or deactivated."""
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    user = session.get(User, user_id)
    if user is None:
        raise AuthError("There is no such user.")
    # other admins who can sign in: the passwordless single-user account cannot
    other_admins = session.scalar(
        select(func.count())
        .select_from(User)
        .where(User.role == "admin", User.active, User.password_hash.is_not(None), User.id != user.id)
    )
    if user.role == "admin" and user.active and (role != "admin" or not active) and not other_admins:
        raise AuthError("This is the only administrator; make another user admin first.")
    user.role, user.active = role, active
    return user


def single_user(session: Session) -> User:
    """The account that owns labels in single-user mode (no password; cannot sign in)."""
    user = session.scalar(select(User).where(User.username == SINGLE_USER))
    if user is None:
        user = User(username=SINGLE_USER, password_hash=None, role="admin")
        session.add(user)
        session.flush()
    return user


def auth_disabled(mode: str, server_address: str | None) -> bool:
    """Whether the app may run without sign-in: only `MICS_AUTH=none` on a localhost-only server.

    Raises AuthError when `none` is asked for on a server other machines can reach.
    """
    if mode in ("", "password"):
        return False
    if mode != "none":
        raise AuthError(f"MICS_AUTH must be 'password' or 'none', not {mode!r}.")
    if (server_address or "") not in LOCAL_ADDRESSES:
        raise AuthError(
            "MICS_AUTH=none is only allowed when the server listens on localhost "
            "(streamlit run app.py --server.address localhost)."
        )
    return True
