"""Local accounts: argon2 password hashes, roles, the last-admin guard and when sign-in may be skipped."""

from __future__ import annotations

import pytest

from mics_core.auth import (
    SINGLE_USER,
    AuthError,
    accounts,
    allowed,
    auth_disabled,
    authenticate,
    create_first_admin,
    create_user,
    has_users,
    set_role,
    single_user,
)
from mics_core.db.models import User

PASSWORD = "correct horse"


def test_create_user_stores_an_argon2_hash_not_the_password(db):
    with db.session() as session:
        user = create_user(session, "  alice ", PASSWORD, "reviewer")
        assert user.username == "alice" and user.role == "reviewer" and user.active
        assert user.password_hash != PASSWORD and user.password_hash.startswith("$argon2")
        assert PASSWORD not in user.password_hash


def test_two_users_with_the_same_password_get_different_hashes(db):
    with db.session() as session:
        first = create_user(session, "alice", PASSWORD)
        second = create_user(session, "bob", PASSWORD)
        assert first.password_hash != second.password_hash  # salted


def test_a_new_user_is_an_annotator_by_default(db):
    with db.session() as session:
        assert create_user(session, "alice", PASSWORD).role == "annotator"


@pytest.mark.parametrize(
    ("username", "password", "role", "message"),
    [
        ("alice", "short", "annotator", "at least 8 characters"),
        ("", PASSWORD, "annotator", "1 to 100 characters"),
        ("   ", PASSWORD, "annotator", "1 to 100 characters"),
        ("x" * 101, PASSWORD, "annotator", "1 to 100 characters"),
        ("alice", PASSWORD, "superuser", "Unknown role 'superuser'"),
    ],
)
def test_create_user_rejects_bad_input(db, username, password, role, message):
    with db.session() as session, pytest.raises(AuthError, match=message):
        create_user(session, username, password, role)


def test_user_names_are_unique_ignoring_case(db):
    with db.session() as session:
        create_user(session, "Alice", PASSWORD)
        with pytest.raises(AuthError, match="is taken"):
            create_user(session, "alice", PASSWORD)
        with pytest.raises(AuthError, match="is taken"):
            create_user(session, " ALICE ", PASSWORD)


def test_first_admin_is_an_admin_and_only_allowed_once(db):
    with db.session() as session:
        assert not has_users(session)
        admin = create_first_admin(session, "root", PASSWORD)
        assert admin.role == "admin" and has_users(session)
        with pytest.raises(AuthError, match="already exists"):
            create_first_admin(session, "intruder", PASSWORD)


def test_first_admin_is_refused_once_any_account_exists(db):
    with db.session() as session:
        create_user(session, "alice", PASSWORD)
        with pytest.raises(AuthError, match="already exists"):
            create_first_admin(session, "intruder", PASSWORD)


def test_the_single_user_account_does_not_count_as_an_account(db):
    with db.session() as session:
        single_user(session)
        assert not has_users(session)
        assert create_first_admin(session, "root", PASSWORD).role == "admin"


def test_authenticate_with_the_right_password_returns_the_user(db):
    with db.session() as session:
        alice_id = create_user(session, "alice", PASSWORD).id
        assert authenticate(session, "alice", PASSWORD).id == alice_id
        assert authenticate(session, " ALICE ", PASSWORD).id == alice_id  # names ignore case and spaces


def test_every_sign_in_failure_gives_the_same_message(db):
    with db.session() as session:
        create_user(session, "alice", PASSWORD)
        inactive = create_user(session, "bob", PASSWORD)
        inactive.active = False
        single_user(session)  # exists, has no password
        messages = set()
        for username, password in [
            ("alice", "wrong password"),
            ("nobody", PASSWORD),
            ("bob", PASSWORD),
            (SINGLE_USER, ""),
            (SINGLE_USER, PASSWORD),
        ]:
            with pytest.raises(AuthError) as failure:
                authenticate(session, username, password)
            messages.add(str(failure.value))
        assert messages == {"Wrong user name or password."}


def test_set_role_changes_role_and_active_flag(db):
    with db.session() as session:
        create_first_admin(session, "root", PASSWORD)
        alice = create_user(session, "alice", PASSWORD)
        assert set_role(session, alice.id, "reviewer").role == "reviewer"
        set_role(session, alice.id, "reviewer", active=False)
        assert not alice.active
        with pytest.raises(AuthError, match="Wrong user name or password"):
            authenticate(session, "alice", PASSWORD)


def test_set_role_rejects_unknown_roles_and_users(db):
    with db.session() as session:
        admin = create_first_admin(session, "root", PASSWORD)
        with pytest.raises(AuthError, match="Unknown role"):
            set_role(session, admin.id, "owner")
        with pytest.raises(AuthError, match="no such user"):
            set_role(session, admin.id + 100, "annotator")


@pytest.mark.parametrize(("role", "active"), [("reviewer", True), ("annotator", True), ("admin", False)])
def test_the_last_active_admin_cannot_be_demoted_or_deactivated(db, role, active):
    with db.session() as session:
        admin = create_first_admin(session, "root", PASSWORD)
        with pytest.raises(AuthError, match="only administrator"):
            set_role(session, admin.id, role, active)
        assert admin.role == "admin" and admin.active


def test_an_inactive_admin_does_not_count_as_another_admin(db):
    with db.session() as session:
        admin = create_first_admin(session, "root", PASSWORD)
        other = create_user(session, "old_admin", PASSWORD, "admin")
        set_role(session, other.id, "admin", active=False)
        with pytest.raises(AuthError, match="only administrator"):
            set_role(session, admin.id, "reviewer")


def test_the_passwordless_single_user_does_not_count_as_another_admin(db):
    # A database first used with MICS_AUTH=none has the "local" admin, which cannot sign in.
    with db.session() as session:
        single_user(session)
        admin = create_first_admin(session, "root", PASSWORD)
        with pytest.raises(AuthError, match="only administrator"):
            set_role(session, admin.id, "reviewer")


def test_an_admin_can_be_demoted_when_another_admin_exists(db):
    with db.session() as session:
        admin = create_first_admin(session, "root", PASSWORD)
        create_user(session, "deputy", PASSWORD, "admin")
        assert set_role(session, admin.id, "annotator").role == "annotator"
        assert authenticate(session, "root", PASSWORD).role == "annotator"


@pytest.mark.parametrize(
    ("role", "reachable", "unreachable"),
    [
        ("annotator", ["overview", "label", "export"], ["import", "review", "admin"]),
        ("reviewer", ["overview", "label", "import", "review"], ["admin"]),
        ("admin", ["overview", "label", "import", "review", "admin"], []),
    ],
)
def test_pages_each_role_may_open(role, reachable, unreachable):
    assert all(allowed(role, page) for page in reachable)
    assert not any(allowed(role, page) for page in unreachable)


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1", "::1"])
def test_auth_none_is_allowed_on_a_localhost_only_server(address):
    assert auth_disabled("none", address) is True


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "192.168.1.10"])
def test_auth_none_is_refused_on_a_server_others_can_reach(address):
    with pytest.raises(AuthError, match="only allowed when the server listens on localhost"):
        auth_disabled("none", address)


@pytest.mark.parametrize("mode", ["password", ""])
def test_password_mode_needs_sign_in_everywhere(mode):
    assert auth_disabled(mode, "localhost") is False
    assert auth_disabled(mode, "0.0.0.0") is False


@pytest.mark.parametrize("mode", ["None", "off", "ldap"])
def test_unknown_auth_modes_are_rejected(mode):
    with pytest.raises(AuthError, match="must be 'password' or 'none'"):
        auth_disabled(mode, "localhost")


def test_single_user_creates_one_passwordless_admin_once(db):
    with db.session() as session:
        first = single_user(session)
        second = single_user(session)
        assert first.id == second.id
        assert first.username == SINGLE_USER and first.role == "admin" and first.password_hash is None
        assert session.query(User).count() == 1
    with db.session() as session:
        assert single_user(session).id == first.id


def test_accounts_are_listed_oldest_first_without_the_single_user_account(db):
    with db.session() as session:
        single_user(session)
        names = [create_user(session, name, PASSWORD).username for name in ("bob", "alice")]
        assert [user.username for user in accounts(session)] == names
