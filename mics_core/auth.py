"""Local accounts: salted password hashes (argon2), roles, and who may do what.

Roles are ordered: an admin can do everything a reviewer can, a reviewer everything an
annotator can. Pages ask `allowed(role, page)` rather than comparing role names.
"""

from __future__ import annotations

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mics_core.db.models import ROLES, User
from mics_core.errors import RequestRefused

LOCAL_ADDRESSES = ("localhost", "127.0.0.1", "::1")
SINGLE_USER = "local"
MIN_PASSWORD = 8

# The least role that may open each page; pages not listed are open to every signed-in user.
PAGE_ROLES = {"import": "reviewer", "review": "reviewer", "admin": "admin"}

_hasher = PasswordHasher()


class AuthError(RequestRefused):
    """A sign-in or account change that cannot be done; the message says why."""


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
    if username.lower() == SINGLE_USER:
        raise AuthError(f"The user name {SINGLE_USER!r} is reserved for single-user mode.")
    if role not in ROLES:
        raise AuthError(f"Unknown role {role!r}; use one of {', '.join(ROLES)}.")
    if len(password) < MIN_PASSWORD:
        raise AuthError(f"The password must be at least {MIN_PASSWORD} characters.")
    if session.scalar(select(User).where(func.lower(User.username) == username.lower())):
        raise AuthError(f"The user name {username!r} is taken.")
    user = User(username=username, password_hash=_hasher.hash(password), role=role)
    session.add(user)
    session.flush()
    return user


def create_first_admin(session: Session, username: str, password: str) -> User:
    """The first-run account; refused once any account with a password exists."""
    if has_users(session):
        raise AuthError("An administrator already exists; sign in instead.")
    return create_user(session, username, password, "admin")


def authenticate(session: Session, username: str, password: str) -> User:
    """The active user with this name and password; one message for every failure, so the
    screen does not tell which user names exist."""
    user = session.scalar(select(User).where(func.lower(User.username) == username.strip().lower()))
    failure = AuthError("Wrong user name or password.")
    if user is None or not user.active or not user.password_hash:
        raise failure
    try:
        _hasher.verify(user.password_hash, password)
    except (VerificationError, InvalidHashError):
        raise failure from None
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
