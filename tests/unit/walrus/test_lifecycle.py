"""The lifecycle job (`lifecycle.expire`) against a temporary SQLite database and filesystem store:
expiring current versions (deleted, or hidden by a delete marker on versioned buckets),
noncurrent versions, lone delete markers, and stale multipart uploads."""

from __future__ import annotations

import datetime as _dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from mallee.core.errors import CloudError
from mallee.db import migrate
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore
from mallee.services.walrus import lifecycle
from mallee.services.walrus.object_layer import ObjectLayer
from mallee.services.walrus.tables import Bucket, ObjectVersion, Part, Upload

T0 = _dt.datetime(2026, 1, 10, 15, 30, tzinfo=_dt.UTC)
DAY = _dt.timedelta(days=1)


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'walrus.db'}")
    migrate.upgrade(database.engine, "walrus")
    yield database
    database.dispose()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "blobs")


def _blob(store: FilesystemObjectStore, data: bytes = b"x") -> str:
    writer = store.writer()
    writer.write(data)
    locator: str = writer.commit().locator
    return locator


def _bucket(db: Database, name: str, rules: list[dict[str, Any]], versioning: str = "") -> None:
    with db.session() as s:
        s.add(
            Bucket(
                name=name,
                owner_account_id="111122223333",
                created=T0,
                versioning=versioning,
                lifecycle=json.dumps(lifecycle.check_configuration({"Rules": rules})),
            )
        )


def _put(
    db: Database,
    store: FilesystemObjectStore,
    bucket: str,
    key: str,
    when: _dt.datetime,
    *,
    version_id: str = "null",
    tags: list[dict[str, str]] | None = None,
    marker: bool = False,
) -> str | None:
    locator = None if marker else _blob(store)
    with db.session() as s:
        for old in s.scalars(
            select(ObjectVersion).where(ObjectVersion.bucket == bucket, ObjectVersion.key == key)
        ):
            old.is_latest = False
        s.add(
            ObjectVersion(
                bucket=bucket,
                key=key,
                version_id=version_id,
                is_latest=True,
                is_delete_marker=marker,
                size=0 if marker else 1,
                last_modified=when,
                owner_account_id="111122223333",
                tags=json.dumps(tags or []),
                locator=locator,
            )
        )
    return locator


def _versions(db: Database, bucket: str) -> list[tuple[str, str, bool, bool]]:
    with db.session() as s:
        rows = s.scalars(
            select(ObjectVersion).where(ObjectVersion.bucket == bucket).order_by(ObjectVersion.id)
        )
        return [(v.key, v.version_id, v.is_latest, v.is_delete_marker) for v in rows]


def test_due_rounds_up_to_the_next_midnight_utc() -> None:
    assert lifecycle.due(T0, 1) == _dt.datetime(2026, 1, 12, tzinfo=_dt.UTC)
    midnight = _dt.datetime(2026, 1, 10, tzinfo=_dt.UTC)
    assert lifecycle.due(midnight, 2) == _dt.datetime(2026, 1, 12, tzinfo=_dt.UTC)


def test_expiration_days_deletes_matching_objects_of_an_unversioned_bucket(
    db: Database, store: FilesystemObjectStore
) -> None:
    _bucket(
        db,
        "b1",
        [{"ID": "logs", "Status": "Enabled", "Filter": {"Prefix": "logs/"}, "Expiration": {"Days": 3}}],
    )
    gone = _put(db, store, "b1", "logs/old.txt", T0)
    _put(db, store, "b1", "logs/new.txt", T0 + 2 * DAY)
    _put(db, store, "b1", "data/keep.txt", T0)
    assert gone is not None and store.exists(gone)
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 2 * DAY) == 0  # not due yet
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 4 * DAY) == 1
    assert [k for k, *_ in _versions(db, "b1")] == ["logs/new.txt", "data/keep.txt"]
    assert not store.exists(gone)  # the blob was collected
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 100 * DAY) == 1
    assert [k for k, *_ in _versions(db, "b1")] == ["data/keep.txt"]


def test_disabled_rules_do_nothing(db: Database, store: FilesystemObjectStore) -> None:
    _bucket(db, "b2", [{"Status": "Disabled", "Filter": {}, "Expiration": {"Days": 1}}])
    _put(db, store, "b2", "k", T0)
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 100 * DAY) == 0
    assert len(_versions(db, "b2")) == 1


def test_expiration_by_tag_and_date(db: Database, store: FilesystemObjectStore) -> None:
    rules = [
        {
            "Status": "Enabled",
            "Filter": {"And": {"Prefix": "t/", "Tags": [{"Key": "tmp", "Value": "yes"}]}},
            "Expiration": {"Date": _dt.datetime(2026, 3, 1, tzinfo=_dt.UTC)},
        }
    ]
    _bucket(db, "b3", rules)
    _put(db, store, "b3", "t/tagged", T0, tags=[{"Key": "tmp", "Value": "yes"}, {"Key": "o", "Value": "1"}])
    _put(db, store, "b3", "t/other", T0, tags=[{"Key": "tmp", "Value": "no"}])
    _put(db, store, "b3", "u/tagged", T0, tags=[{"Key": "tmp", "Value": "yes"}])
    assert (
        lifecycle.expire(
            ObjectLayer(db, store, GroupCommitter(db)), _dt.datetime(2026, 2, 28, 23, 59, tzinfo=_dt.UTC)
        )
        == 0
    )
    assert (
        lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), _dt.datetime(2026, 3, 1, tzinfo=_dt.UTC))
        == 1
    )
    assert sorted(k for k, *_ in _versions(db, "b3")) == ["t/other", "u/tagged"]


def test_versioned_bucket_gets_a_delete_marker_then_noncurrent_versions_expire(
    db: Database, store: FilesystemObjectStore
) -> None:
    rules = [
        {
            "ID": "all",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "Expiration": {"Days": 10},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 5},
        }
    ]
    _bucket(db, "b4", rules, versioning="Enabled")
    first = _put(db, store, "b4", "k", T0, version_id="v1")
    _put(db, store, "b4", "k", T0 + 3 * DAY, version_id="v2")
    # v1 became noncurrent at T0+3d: due 5 days later (rounded to midnight); v2 is current, not yet due.
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 9 * DAY) == 1
    assert _versions(db, "b4") == [("k", "v2", True, False)]
    assert first is not None and not store.exists(first)
    # v2 expires: a delete marker hides it, nothing is deleted yet.
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 14 * DAY) == 1
    versions = _versions(db, "b4")
    assert versions[0] == ("k", "v2", False, False)
    assert versions[1][2:] == (True, True)
    # later the noncurrent v2 goes too, leaving the marker.
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 30 * DAY) == 1
    assert [v[3] for v in _versions(db, "b4")] == [True]


def test_newer_noncurrent_versions_are_kept(db: Database, store: FilesystemObjectStore) -> None:
    rules = [
        {
            "Status": "Enabled",
            "Filter": {},
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 2},
        }
    ]
    _bucket(db, "b5", rules, versioning="Enabled")
    for i in range(5):
        _put(db, store, "b5", "k", T0 + i * DAY, version_id=f"v{i}")
    assert (
        lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 50 * DAY) == 2
    )  # v0 and v1; v2, v3 kept; v4 current
    assert [v[1] for v in _versions(db, "b5")] == ["v2", "v3", "v4"]


def test_suspended_bucket_marker_replaces_the_null_version(
    db: Database, store: FilesystemObjectStore
) -> None:
    _bucket(
        db, "b6", [{"Status": "Enabled", "Prefix": "", "Expiration": {"Days": 1}}], versioning="Suspended"
    )
    _put(db, store, "b6", "k", T0, version_id="v1")
    _put(db, store, "b6", "k", T0 + DAY, version_id="null")
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 5 * DAY) == 1
    assert _versions(db, "b6") == [("k", "v1", False, False), ("k", "null", True, True)]


def test_expired_object_delete_marker_is_removed_when_alone(
    db: Database, store: FilesystemObjectStore
) -> None:
    _bucket(
        db, "b7", [{"Status": "Enabled", "Filter": {}, "Expiration": {"ExpiredObjectDeleteMarker": True}}]
    )
    _put(db, store, "b7", "lone", T0, version_id="m1", marker=True)
    _put(db, store, "b7", "kept", T0, version_id="v1")
    _put(db, store, "b7", "kept", T0, version_id="m2", marker=True)
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + DAY) == 1
    assert [v[:2] for v in _versions(db, "b7")] == [("kept", "v1"), ("kept", "m2")]


def test_stale_multipart_uploads_are_aborted(db: Database, store: FilesystemObjectStore) -> None:
    _bucket(
        db,
        "b8",
        [
            {
                "Status": "Enabled",
                "Filter": {"Prefix": "up/"},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
            }
        ],
    )
    part = _blob(store, b"part")
    with db.session() as s:
        for upload_id, key in (("u1", "up/a"), ("u2", "other/b")):
            s.add(
                Upload(
                    upload_id=upload_id, bucket="b8", key=key, initiated=T0, owner_account_id="111122223333"
                )
            )
        s.add(Part(upload_id="u1", part_number=1, size=4, etag='"e"', locator=part, last_modified=T0))
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + DAY) == 0
    assert lifecycle.expire(ObjectLayer(db, store, GroupCommitter(db)), T0 + 3 * DAY) == 1
    with db.session() as s:
        assert list(s.scalars(select(Upload.upload_id))) == ["u2"]
        assert list(s.scalars(select(Part.upload_id))) == []
    assert not store.exists(part)


@pytest.mark.parametrize(
    ("rule", "code"),
    [
        ({"Status": "Enabled", "Filter": {}}, "InvalidRequest"),  # no action
        ({"Status": "On", "Filter": {}, "Expiration": {"Days": 1}}, "MalformedXML"),
        ({"Status": "Enabled", "Expiration": {"Days": 1}}, "MalformedXML"),  # neither Filter nor Prefix
        ({"Status": "Enabled", "Filter": {}, "Expiration": {"Days": 0}}, "InvalidArgument"),
        (
            {"Status": "Enabled", "Filter": {}, "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True}},
            "MalformedXML",
        ),
        ({"Status": "Enabled", "Filter": {}, "Expiration": {"Date": T0}}, "InvalidArgument"),  # not midnight
        (
            {
                "Status": "Enabled",
                "Filter": {"Tag": {"Key": "a", "Value": "b"}},
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            "InvalidArgument",
        ),
        (
            {
                "Status": "Enabled",
                "Filter": {"Prefix": "a", "Tag": {"Key": "a", "Value": "b"}},
                "Expiration": {"Days": 1},
            },
            "MalformedXML",
        ),
    ],
)
def test_invalid_rules_are_refused(rule: dict[str, object], code: str) -> None:
    with pytest.raises(CloudError) as err:
        lifecycle.check_configuration({"Rules": [rule]})
    assert err.value.code == code
