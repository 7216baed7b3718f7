"""Local accounts: argon2 password hashes, roles, the last-admin guard and when sign-in may be skipped."""

from __future__ import annotations

import threading

import pytest
from argon2 import PasswordHasher
from sqlalchemy import func, select

from mics_core import auth
from mics_core.auth import (
    SINGLE_USER,
    THROTTLE,
    AuthError,
    SignInThrottle,
    accounts,
    allowed,
    auth_disabled,
    authenticate,
    create_first_admin,
    create_user,
    first_admin_in_browser,
    has_users,
    set_role,
    single_user,
)
from mics_core.db.models import User

PASSWORD = "correct horse"


@pytest.fixture(autouse=True)
def _fresh_throttle():
    """Failures of one test do not throttle the next."""
    THROTTLE.clear()
    yield
    THROTTLE.clear()


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


@pytest.mark.parametrize("address", ["localhost", "127.0.0.1", "::1"])
def test_the_browser_may_create_the_first_admin_on_a_localhost_only_server(address):
    assert first_admin_in_browser(address)


@pytest.mark.parametrize("address", [None, "", "0.0.0.0", "192.168.1.10", "::"])
def test_the_browser_may_not_create_the_first_admin_on_a_server_others_can_reach(address):
    assert not first_admin_in_browser(address)


def test_the_browser_may_not_create_the_first_admin_through_a_proxy_even_on_localhost():
    assert not first_admin_in_browser("127.0.0.1", through_proxy=True)


def _at_once(calls: list) -> list[object]:
    """Run the calls in threads released together; each one's result or exception."""
    start = threading.Barrier(len(calls))
    results: list[object] = [None] * len(calls)

    def run(i: int) -> None:
        start.wait()
        try:
            results[i] = calls[i]()
        except Exception as exc:  # collected for the assertions
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    return results


def test_four_concurrent_first_admin_requests_make_exactly_one_admin(db):
    def first_admin(name: str):
        def call() -> str:
            with db.session() as session:
                return create_first_admin(session, name, PASSWORD).username

        return call

    results = _at_once([first_admin(f"root{i}") for i in range(4)])
    created = [r for r in results if isinstance(r, str)]
    refused = [r for r in results if isinstance(r, AuthError)]
    assert len(created) == 1 and len(refused) == 3, results
    assert all("already exists" in str(r) for r in refused)
    with db.session() as session:
        assert session.scalar(select(func.count()).select_from(User).where(User.role == "admin")) == 1


def test_concurrent_accounts_with_one_name_make_one_account_and_clean_refusals(db):
    def add(name: str):
        def call() -> int:
            with db.session() as session:
                return create_user(session, name, PASSWORD).id

        return call

    results = _at_once([add("alice"), add("Alice"), add("ALICE"), add("alice ")])
    assert sum(isinstance(r, int) for r in results) == 1, results
    assert all("is taken" in str(r) for r in results if not isinstance(r, int))


def test_user_names_with_control_characters_are_refused(db):
    with db.session() as session, pytest.raises(AuthError, match="control characters"):
        create_user(session, "eve\r=1+1", PASSWORD)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def cheap_hashes(monkeypatch):
    """Argon2 at its cheapest, so tests with many failed sign-ins stay fast."""
    monkeypatch.setattr(auth, "_hasher", PasswordHasher(time_cost=1, memory_cost=8, parallelism=1))


def test_an_account_must_wait_after_five_failures_and_longer_after_each_further_one(db, cheap_hashes):
    clock = Clock()
    throttle = SignInThrottle(clock)
    with db.session() as session:
        create_user(session, "alice", PASSWORD)
        for _ in range(auth.ACCOUNT_FREE_FAILURES):
            with pytest.raises(AuthError, match="Wrong user name or password"):
                authenticate(session, "alice", "wrong password", throttle=throttle)
        # now even the right password is not checked
        with pytest.raises(AuthError, match="Too many failed sign-ins; wait 30 s"):
            authenticate(session, "Alice", PASSWORD, throttle=throttle)
        clock.now += 31
        with pytest.raises(AuthError, match="Wrong user name or password"):
            authenticate(session, "alice", "wrong again", throttle=throttle)
        with pytest.raises(AuthError, match="wait 60 s"):
            authenticate(session, "alice", PASSWORD, throttle=throttle)
        clock.now += 61
        assert authenticate(session, "alice", PASSWORD, throttle=throttle).username == "alice"
        # success forgets the account's failures
        with pytest.raises(AuthError, match="Wrong user name or password"):
            authenticate(session, "alice", "wrong password", throttle=throttle)


def test_the_wait_is_capped_and_old_failures_are_forgotten():
    clock = Clock()
    throttle = SignInThrottle(clock)
    for _ in range(30):
        throttle.failed("account:x")
    assert throttle.wait_s("account:x", 5) == auth.MAX_WAIT_S
    clock.now += auth.WINDOW_S + 1
    assert throttle.wait_s("account:x", 5) == 0


def test_unknown_names_are_throttled_like_known_ones(db, cheap_hashes):
    """The lock-out does not tell which names exist either."""
    throttle = SignInThrottle(Clock())
    with db.session() as session:
        for _ in range(auth.ACCOUNT_FREE_FAILURES):
            with pytest.raises(AuthError, match="Wrong user name or password"):
                authenticate(session, "nobody", PASSWORD, throttle=throttle)
        with pytest.raises(AuthError, match="Too many failed sign-ins"):
            authenticate(session, "nobody", PASSWORD, throttle=throttle)


def test_a_client_trying_many_names_must_wait_but_other_clients_need_not(db, cheap_hashes):
    throttle = SignInThrottle(Clock())
    with db.session() as session:
        create_user(session, "alice", PASSWORD)
        for i in range(auth.CLIENT_FREE_FAILURES):
            with pytest.raises(AuthError, match="Wrong user name or password"):
                authenticate(session, f"guess{i}", PASSWORD, client="10.0.0.9", throttle=throttle)
        with pytest.raises(AuthError, match="Too many failed sign-ins"):
            authenticate(session, "alice", PASSWORD, client="10.0.0.9", throttle=throttle)
        assert authenticate(session, "alice", PASSWORD, client="10.0.0.7", throttle=throttle).username == "alice"


class SpyHasher(PasswordHasher):
    """Records the hash each verification is made against."""

    def __init__(self) -> None:
        super().__init__(time_cost=1, memory_cost=8, parallelism=1)
        self.verified: list[str] = []

    def verify(self, hash: str | bytes, password: str | bytes) -> bool:
        self.verified.append(hash)
        return super().verify(hash, password)


@pytest.mark.parametrize("who", ["nobody", "bob (inactive)", SINGLE_USER])
def test_a_name_that_cannot_sign_in_costs_one_verification_against_a_dummy_hash(db, monkeypatch, who):
    """Timing does not tell which names exist: every failure runs one argon2 verification."""
    spy = SpyHasher()
    monkeypatch.setattr(auth, "_hasher", spy)
    with db.session() as session:
        alice = create_user(session, "alice", PASSWORD)
        create_user(session, "bob", PASSWORD).active = False
        single_user(session)
        with pytest.raises(AuthError, match="Wrong user name or password"):
            authenticate(session, who.split()[0], PASSWORD, throttle=SignInThrottle())
        assert spy.verified == [auth._dummy_hash()]
        assert auth._dummy_hash().startswith("$argon2")
        spy.verified.clear()
        with pytest.raises(AuthError, match="Wrong user name or password"):
            authenticate(session, "alice", "wrong password", throttle=SignInThrottle())
        assert spy.verified == [alice.password_hash]


def test_no_password_matches_the_dummy_hash():
    assert not auth._verify(None, "")
    assert not auth._verify(None, PASSWORD)
