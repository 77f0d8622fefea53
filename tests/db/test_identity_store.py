"""The identity store (mallee.services.clc.iam.store) on a real SQLite file and a real PostgreSQL."""

from __future__ import annotations

import datetime as _dt
import json
import re
import threading

import pytest
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from mallee.core import clock, ids
from mallee.core.errors import CloudError
from mallee.db.session import Database
from mallee.services.clc.iam import store
from mallee.services.clc.tables import (
    AccessKey,
    Account,
    Group,
    GroupMember,
    InlinePolicy,
    ManagedPolicy,
    PolicyAttachment,
    User,
)

READ_ONLY_ARN = "arn:aws:iam::aws:policy/ReadOnlyAccess"


# -- helpers: rows the IAM handlers would create --------------------------------------------------


def _user(s: Session, account_id: str, name: str) -> User:
    user = User(
        id=ids.unique_id("AIDA"), account_id=account_id, name=name, path="/", created=clock.now(), tags="[]"
    )
    s.add(user)
    s.flush()
    return user


def _group(s: Session, account_id: str, name: str) -> Group:
    group = Group(id=ids.unique_id("AGPA"), account_id=account_id, name=name, path="/", created=clock.now())
    s.add(group)
    s.flush()
    return group


def _managed(s: Session, account_id: str, name: str, document: str, path: str = "/") -> ManagedPolicy:
    now = clock.now()
    policy = ManagedPolicy(
        id=ids.unique_id("ANPA"),
        account_id=account_id,
        name=name,
        path=path,
        description="",
        document=document,
        created=now,
        updated=now,
    )
    s.add(policy)
    s.flush()
    return policy


def _doc(action: str) -> str:
    return json.dumps(
        {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": action, "Resource": "*"}]}
    )


def _code(excinfo: pytest.ExceptionInfo[CloudError]) -> str:
    return str(excinfo.value.code)


# -- accounts ------------------------------------------------------------------------------------


def test_account_ids_are_twelve_digits(database: Database) -> None:
    with database.session() as s:
        accounts = [store.create_account(s, f"acct-{i}") for i in range(10)]
    assert all(re.fullmatch(r"[1-9]\d{11}", a.id) for a in accounts)
    assert len({a.id for a in accounts}) == 10
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 10


def test_duplicate_account_name_is_refused(database: Database) -> None:
    with database.session() as s:
        store.create_account(s, "alpha")
    with database.session() as s, pytest.raises(CloudError) as excinfo:
        store.create_account(s, "alpha")
    assert _code(excinfo) == "EntityAlreadyExists"
    assert excinfo.value.status == 409


def test_account_name_unique_in_the_database(database: Database) -> None:
    # Even past the store's check (two racing requests), the database keeps names unique.
    now = clock.now()
    with pytest.raises(IntegrityError), database.session() as s:
        s.add(Account(id="111111111111", name="twin", is_system=False, created=now))
        s.flush()
        s.add(Account(id="222222222222", name="twin", is_system=False, created=now))
        s.flush()


@pytest.mark.parametrize(
    "name",
    [
        "ab",
        "Alpha",
        "under_score",
        "-leading",
        "trailing-",
        "double--hyphen",
        "has space",
        "",
        "x" * 64,
        "dot.ted",
    ],
)
def test_invalid_account_names_are_refused(database: Database, name: str) -> None:
    with database.session() as s, pytest.raises(CloudError) as excinfo:
        store.create_account(s, name)
    assert _code(excinfo) == "ValidationError"
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(Account)) == 0


def test_one_character_account_name_is_refused(database: Database) -> None:
    with database.session() as s, pytest.raises(CloudError) as excinfo:
        store.create_account(s, "a")
    assert _code(excinfo) == "ValidationError"


@pytest.mark.parametrize("name", ["abc", "a-b", "eucalyptus", "0-9", "x" * 63])
def test_valid_account_names_are_accepted(database: Database, name: str) -> None:
    with database.session() as s:
        assert store.create_account(s, name).name == name


def test_find_account_by_id_and_name(database: Database) -> None:
    with database.session() as s:
        account_id = store.create_account(s, "finder").id
        store.create_account(s, "other")
    with database.session() as s:
        assert store.find_account(s, account_id).name == "finder"
        assert store.find_account(s, "finder").id == account_id
        for missing in ("nobody", "999999999999"):
            with pytest.raises(CloudError) as excinfo:
                store.find_account(s, missing)
            assert _code(excinfo) == "NoSuchEntity"


def test_find_account_by_all_digit_name(database: Database) -> None:
    # A name made of digits is looked up by id first, then by name.
    with database.session() as s:
        account_id = store.create_account(s, "2024").id
    with database.session() as s:
        assert store.find_account(s, "2024").id == account_id


def test_account_timestamps_round_trip_as_utc(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "clock")
        created = account.created
    with database.session() as s:
        stored = s.get(Account, account.id)
        assert stored is not None
        assert stored.created.tzinfo is not None and stored.created.utcoffset() == _dt.timedelta(0)
        assert stored.created == created


# -- access keys ---------------------------------------------------------------------------------


def test_access_keys_limited_to_two_per_identity(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "keys")
        alice = _user(s, account.id, "alice")
        bob = _user(s, account.id, "bob")
    for user_id in (None, alice.id):  # the root identity and a user, each with its own quota
        with database.session() as s:
            first = store.create_access_key(s, account.id, user_id)
            second = store.create_access_key(s, account.id, user_id)
        assert first.id.startswith("AKIA") and len(first.id) == 20 and len(first.secret) == 40
        assert first.id != second.id
        with database.session() as s, pytest.raises(CloudError) as excinfo:
            store.create_access_key(s, account.id, user_id)
        assert _code(excinfo) == "LimitExceeded"
    # Another identity of the same account still has its whole quota; temporary keys don't count.
    with database.session() as s:
        store.create_session_credentials(s, account.id, bob.id, _dt.timedelta(hours=1))
        store.create_access_key(s, account.id, bob.id)
        store.create_access_key(s, account.id, bob.id)
    with database.session() as s:
        assert (
            s.scalar(select(func.count()).select_from(AccessKey).where(AccessKey.session_token.is_(None)))
            == 6
        )


def test_session_credentials(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "sts")
        before = clock.now()
        key = store.create_session_credentials(s, account.id, None, _dt.timedelta(hours=1))
        after = clock.now()
    assert key.id.startswith("ASIA") and len(key.id) == 20
    assert key.session_token and len(key.session_token) <= 256
    hour = _dt.timedelta(hours=1)
    assert key.expires is not None and before + hour <= key.expires <= after + hour
    with database.session() as s:
        stored = s.get(AccessKey, key.id)
        assert stored is not None
        assert stored.session_token == key.session_token
        assert stored.user_id is None and stored.active
        for value in (stored.created, stored.expires):
            assert value is not None and value.tzinfo is not None and value.utcoffset() == _dt.timedelta(0)
        assert stored.expires == key.expires
        assert stored.created == key.created
        assert stored.last_used is None


def test_non_utc_datetimes_are_stored_as_utc(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "zones")
        plus_ten = _dt.timezone(_dt.timedelta(hours=10))
        when = _dt.datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=plus_ten)
        key = store.create_access_key(s, account.id, None)
        key.last_used = when
    with database.session() as s:
        stored = s.get(AccessKey, key.id)
        assert stored is not None and stored.last_used == when
        assert stored.last_used.utcoffset() == _dt.timedelta(0)
        assert (stored.last_used.hour, stored.last_used.microsecond) == (17, 678901)


def test_expired_session_credentials_are_swept(database: Database) -> None:
    with database.session() as s:
        account_id = store.create_account(s, "sweep").id
    clock.set_offset(-_dt.timedelta(hours=3))
    try:
        with database.session() as s:  # expired two hours ago, by the real clock
            old = store.create_session_credentials(s, account_id, None, _dt.timedelta(hours=1)).id
            recent = store.create_session_credentials(
                s, account_id, None, _dt.timedelta(hours=2, minutes=30)
            ).id
    finally:
        clock.set_offset(_dt.timedelta(0))
    with database.session() as s:
        fresh = store.create_session_credentials(s, account_id, None, _dt.timedelta(hours=1)).id
    with database.session() as s:
        assert set(s.scalars(select(AccessKey.id))) == {recent, fresh}
        assert old not in set(s.scalars(select(AccessKey.id)))


# -- users -----------------------------------------------------------------------------------------


def test_user_name_unique_per_account_in_the_database(database: Database) -> None:
    with database.session() as s:
        a = store.create_account(s, "first").id
        b = store.create_account(s, "second").id
        _user(s, a, "carol")
        _user(s, b, "carol")  # the same name in another account is fine
    with pytest.raises(IntegrityError), database.session() as s:
        _user(s, a, "carol")
    with database.session() as s:
        assert s.scalar(select(func.count()).select_from(User)) == 2
        assert store.get_user(s, a, "carol").account_id == a


def test_users_need_an_existing_account(database: Database) -> None:
    with pytest.raises(IntegrityError), database.session() as s:
        _user(s, "999999999999", "orphan")


# -- policies --------------------------------------------------------------------------------------


def test_policy_documents_for_user(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "policies")
        other = store.create_account(s, "unrelated")
        dave = _user(s, account.id, "dave")
        erin = _user(s, account.id, "erin")
        devs = _group(s, account.id, "devs")
        ops = _group(s, account.id, "ops")
        _group(s, account.id, "empty")
        s.add_all(
            [GroupMember(group_id=devs.id, user_id=dave.id), GroupMember(group_id=ops.id, user_id=dave.id)]
        )
        s.add_all(
            [
                InlinePolicy(owner_kind="user", owner_id=dave.id, name="own", document=_doc("s3:GetObject")),
                InlinePolicy(
                    owner_kind="group", owner_id=devs.id, name="devs", document=_doc("ec2:RunInstances")
                ),
                InlinePolicy(
                    owner_kind="group", owner_id=ops.id, name="ops", document=_doc("ec2:RebootInstances")
                ),
                InlinePolicy(owner_kind="user", owner_id=erin.id, name="erin", document=_doc("iam:*")),
            ]
        )
        plain = _managed(s, account.id, "Plain", _doc("sqs:*"))
        nested = _managed(s, account.id, "Nested", _doc("sns:*"), path="/team/a/")
        _managed(s, other.id, "Plain", _doc("kms:*"))  # same name, other account: never picked up
        s.add_all(
            [
                PolicyAttachment(owner_kind="user", owner_id=dave.id, policy_arn=READ_ONLY_ARN),
                PolicyAttachment(
                    owner_kind="user", owner_id=dave.id, policy_arn=f"arn:aws:iam::{account.id}:policy/Plain"
                ),
                PolicyAttachment(
                    owner_kind="group",
                    owner_id=ops.id,
                    policy_arn=f"arn:aws:iam::{account.id}:policy/team/a/Nested",
                ),
                # Dangling attachments (a deleted policy) contribute nothing.
                PolicyAttachment(
                    owner_kind="group", owner_id=devs.id, policy_arn=f"arn:aws:iam::{account.id}:policy/Gone"
                ),
                PolicyAttachment(
                    owner_kind="group", owner_id=devs.id, policy_arn="arn:aws:iam::aws:policy/NoSuch"
                ),
                PolicyAttachment(
                    owner_kind="user", owner_id=erin.id, policy_arn="arn:aws:iam::aws:policy/IAMFullAccess"
                ),
            ]
        )
    from mallee.services.clc.iam.managed import AWS_MANAGED

    with database.session() as s:
        user = store.get_user(s, account.id, "dave")
        docs = store.policy_documents_for_user(s, user)
        assert sorted(docs) == sorted(
            [
                _doc("s3:GetObject"),
                _doc("ec2:RunInstances"),
                _doc("ec2:RebootInstances"),
                AWS_MANAGED[READ_ONLY_ARN].document,
                plain.document,
                nested.document,
            ]
        )
        assert [g.name for g in store.groups_of_user(s, user.id)] == ["devs", "ops"]
        assert store.policy_documents_for_user(s, store.get_user(s, account.id, "erin")) == [
            _doc("iam:*"),
            AWS_MANAGED["arn:aws:iam::aws:policy/IAMFullAccess"].document,
        ]


def test_user_without_policies_has_none(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "bare")
        assert store.policy_documents_for_user(s, _user(s, account.id, "frank")) == []


# -- deleting accounts ---------------------------------------------------------------------------------


def _populate(s: Session, name: str) -> Account:
    """An account with a bit of everything: users, a group, members, keys, inline and managed policies."""
    account = store.create_account(s, name)
    grace = _user(s, account.id, "grace")
    heidi = _user(s, account.id, "heidi")
    team = _group(s, account.id, "team")
    s.add_all(
        [GroupMember(group_id=team.id, user_id=grace.id), GroupMember(group_id=team.id, user_id=heidi.id)]
    )
    s.add_all(
        [
            InlinePolicy(owner_kind="user", owner_id=grace.id, name="p", document=_doc("s3:*")),
            InlinePolicy(owner_kind="group", owner_id=team.id, name="p", document=_doc("ec2:*")),
        ]
    )
    _managed(s, account.id, "Custom", _doc("sqs:*"))
    s.add_all(
        [
            PolicyAttachment(owner_kind="user", owner_id=heidi.id, policy_arn=READ_ONLY_ARN),
            PolicyAttachment(
                owner_kind="group", owner_id=team.id, policy_arn=f"arn:aws:iam::{account.id}:policy/Custom"
            ),
        ]
    )
    store.create_access_key(s, account.id, None)
    store.create_access_key(s, account.id, grace.id)
    store.create_session_credentials(s, account.id, heidi.id, _dt.timedelta(hours=1))
    s.flush()
    return account


def _counts(s: Session) -> dict[str, int]:
    models = (Account, User, Group, GroupMember, AccessKey, InlinePolicy, ManagedPolicy, PolicyAttachment)
    return {m.__tablename__: s.scalar(select(func.count()).select_from(m)) or 0 for m in models}


def test_delete_account_recursive_removes_everything(database: Database) -> None:
    with database.session() as s:
        doomed = _populate(s, "doomed")
        keeper = _populate(s, "keeper")
    with database.session() as s:
        one_account = _counts(s)
        one_account = {table: n // 2 for table, n in one_account.items()}
        assert one_account == {
            "accounts": 1,
            "users": 2,
            "groups": 1,
            "group_members": 2,
            "access_keys": 3,
            "inline_policies": 2,
            "managed_policies": 1,
            "policy_attachments": 2,
        }
        store.delete_account(s, store.find_account(s, doomed.id), recursive=True)
    with database.session() as s:
        assert _counts(s) == one_account  # exactly the keeper's rows are left
        assert s.get(Account, doomed.id) is None
        assert set(s.scalars(select(User.account_id))) == {keeper.id}
        assert set(s.scalars(select(AccessKey.account_id))) == {keeper.id}
        heidi = store.get_user(s, keeper.id, "heidi")
        assert len(store.policy_documents_for_user(s, heidi)) == 3
        with pytest.raises(CloudError) as excinfo:
            store.find_account(s, "doomed")
        assert _code(excinfo) == "NoSuchEntity"
    with database.session() as s:  # the name is free again
        store.create_account(s, "doomed")


def test_delete_account_with_users_needs_recursive(database: Database) -> None:
    with database.session() as s:
        account = _populate(s, "busy")
    with database.session() as s, pytest.raises(CloudError) as excinfo:
        store.delete_account(s, store.find_account(s, account.id), recursive=False)
    assert _code(excinfo) == "DeleteConflict"
    with database.session() as s:
        assert _counts(s)["users"] == 2


def test_delete_empty_account(database: Database) -> None:
    with database.session() as s:
        account = store.create_account(s, "empty")
        store.create_access_key(s, account.id, None)
    with database.session() as s:
        store.delete_account(s, store.find_account(s, "empty"), recursive=False)
    with database.session() as s:
        assert _counts(s)["accounts"] == 0 and _counts(s)["access_keys"] == 0


def test_system_account_cannot_be_deleted(database: Database) -> None:
    with database.session() as s:
        system = store.create_account(s, "eucalyptus", is_system=True)
        store.create_account(s, "tenant")
    with database.session() as s:
        found = store.system_account(s)
        assert found is not None and found.id == system.id
        for recursive in (False, True):
            with pytest.raises(CloudError) as excinfo:
                store.delete_account(s, store.find_account(s, system.id), recursive=recursive)
            assert _code(excinfo) == "DeleteConflict"
    with database.session() as s:
        assert s.get(Account, system.id) is not None


# -- concurrency ---------------------------------------------------------------------------------------


def test_concurrent_user_creation(database: Database) -> None:
    threads_n, per_thread = 8, 20
    with database.session() as s:
        account_id = store.create_account(s, "crowd").id
    errors: list[BaseException] = []
    start = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        try:
            start.wait()
            for i in range(per_thread):
                # One session (one transaction) per user, the way a request handler does it:
                # look the account and the name up, then insert.
                with database.session() as s:
                    account = store.find_account(s, account_id)
                    name = f"user-{t}-{i}"
                    assert (
                        s.scalar(select(User).where(User.account_id == account.id, User.name == name)) is None
                    )
                    _user(s, account.id, name)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    with database.session() as s:
        names = set(s.scalars(select(User.name).where(User.account_id == account_id)))
    assert names == {f"user-{t}-{i}" for t in range(threads_n) for i in range(per_thread)}
