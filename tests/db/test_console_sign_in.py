"""The console's sign-in check (mallee.services.clc.iam.passwords.verify) on a real SQLite file
and a real PostgreSQL: the user, or a refusal that says why."""

from __future__ import annotations

import datetime as _dt

from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.db.session import Database
from mallee.services.clc.iam import passwords, store
from mallee.services.clc.iam.password_policy import PasswordPolicy
from mallee.services.clc.tables import Account, User

PASSWORD = "Correct-Horse-7"
CHEAP = passwords.Cost(log_n=4, r=8, p=1)


def _account(s: Session, name: str = "acme", policy: PasswordPolicy | None = None) -> Account:
    account = store.create_account(s, name)
    account.password_policy = policy.to_json() if policy else None
    return account


def _user(
    s: Session,
    account: Account,
    name: str = "ann",
    *,
    cost: passwords.Cost = passwords.COST,
    changed: _dt.datetime | None = None,
    reset: bool = False,
) -> User:
    now = clock.now()
    user = User(
        id=ids.unique_id("AIDA"),
        account_id=account.id,
        name=name,
        path="/",
        created=now,
        tags="[]",
        password_hash=passwords.hash_password(PASSWORD, cost),
        password_created=now,
        password_changed=changed or now,
        password_reset_required=reset,
    )
    s.add(user)
    s.flush()
    return user


def test_the_right_password_signs_the_user_in(database: Database) -> None:
    with database.session() as s:
        account = _account(s)
        user = _user(s, account)
    with database.session() as s:
        for by in (account.id, account.name):
            found = passwords.verify(s, by, "ann", PASSWORD)
            assert isinstance(found, User) and found.id == user.id


def test_a_wrong_password_an_unknown_user_and_no_profile_are_one_refusal(database: Database) -> None:
    with database.session() as s:
        account = _account(s)
        _user(s, account)
        bare = _user(s, account, "bare")
        bare.password_hash = None
    with database.session() as s:
        for who, password in (
            ("acme", "wrong"),
            ("acme", PASSWORD.lower()),
            ("nobody-here", PASSWORD),  # no such account
        ):
            assert passwords.verify(s, who, "ann", password) == passwords.Refusal("invalid")
        assert passwords.verify(s, "acme", "ghost", PASSWORD) == passwords.Refusal("invalid")
        assert passwords.verify(s, "acme", "bare", PASSWORD) == passwords.Refusal("invalid")


def test_an_expired_password_is_refused_and_says_whether_the_user_may_change_it(database: Database) -> None:
    old = clock.now() - _dt.timedelta(days=31)
    with database.session() as s:
        soft = _account(s, "soft", PasswordPolicy(MaxPasswordAge=30))
        hard = _account(s, "hard", PasswordPolicy(MaxPasswordAge=30, HardExpiry=True))
        fresh = _account(s, "fresh", PasswordPolicy(MaxPasswordAge=32))
        for account in (soft, hard, fresh):
            _user(s, account, changed=old)
    with database.session() as s:
        refused = passwords.verify(s, "soft", "ann", PASSWORD)
        assert isinstance(refused, passwords.Refusal)
        assert (refused.reason, refused.may_change) == ("expired", True)
        assert refused.user is not None and refused.user.name == "ann"
        refused = passwords.verify(s, "hard", "ann", PASSWORD)
        assert isinstance(refused, passwords.Refusal) and (refused.reason, refused.may_change) == (
            "expired",
            False,
        )
        assert isinstance(passwords.verify(s, "fresh", "ann", PASSWORD), User)
        # A wrong password says nothing of its age.
        assert passwords.verify(s, "soft", "ann", "wrong") == passwords.Refusal("invalid")


def test_a_password_to_reset_is_refused_with_its_user(database: Database) -> None:
    with database.session() as s:
        _user(s, _account(s), reset=True)
    with database.session() as s:
        refused = passwords.verify(s, "acme", "ann", PASSWORD)
        assert isinstance(refused, passwords.Refusal)
        assert (refused.reason, refused.may_change) == ("reset-required", True)


def test_a_hash_with_old_parameters_is_remade_at_sign_in(database: Database) -> None:
    with database.session() as s:
        _user(s, _account(s), cost=CHEAP)
    with database.session() as s:
        assert isinstance(passwords.verify(s, "acme", "ann", PASSWORD), User)
    with database.session() as s:
        user = store.get_user(s, store.find_account(s, "acme").id, "ann")
        assert user.password_hash is not None and not passwords.needs_rehash(user.password_hash)
        assert passwords.check_password(PASSWORD, user.password_hash)
