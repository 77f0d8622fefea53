"""The object layer (`object_layer`) on SQLite and PostgreSQL: the version rule (new versions,
"null" versions replacing each other, delete markers, deletes), conditional writes, the group
committer's batches of new versions (Core statements on the DB-API cursor), key locks, reads of
the latest or a given version, and the blobs a replaced version leaves (deleted right after the
commit, their queue rows in a later batch)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from db.conftest import OWNER, T0, add_bucket
from mallee.core.errors import CloudError
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore
from mallee.services.walrus import garbage, runtime
from mallee.services.walrus.blob_reads import chunks, open_body
from mallee.services.walrus.bodies import StoredBody
from mallee.services.walrus.encryption import SSE_S3, CustomerKey, Sealing, crypt
from mallee.services.walrus.object_layer import ObjectLayer, Write, WriteConditions, add_versions
from mallee.services.walrus.tables import Bucket, Garbage, ObjectVersion, Part, Upload


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "walrus")


@pytest.fixture
def writer(walrus_db: Database, store: FilesystemObjectStore) -> Iterator[GroupCommitter]:
    committer: GroupCommitter = GroupCommitter(
        walrus_db, after_commit=lambda s: garbage.remove(garbage.queued(s), store, committer)
    )
    yield committer
    committer.close()


@pytest.fixture
def layer(walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter) -> ObjectLayer:
    return ObjectLayer(walrus_db, store, writer)


def _add(s: Session, versions: Sequence[ObjectVersion]) -> None:
    assert add_versions(s, [Write(v) for v in versions]) == [None] * len(versions)


# -- new versions through the group committer ----------------------------------------------------


def _blob(store: FilesystemObjectStore, data: bytes) -> str:
    writer = store.writer()
    writer.write(data)
    locator: str = writer.commit().locator
    return locator


def _put(
    layer: ObjectLayer,
    bucket: Bucket,
    key: str,
    locator: str,
    version_id: str = "null",
    conditions: WriteConditions | None = None,
) -> None:
    """A PutObject's new version, through the group committer."""
    version = ObjectVersion(bucket=bucket.name, key=key, version_id=version_id, is_latest=True, size=1,
                            etag=f'"{locator[-4:]}"', last_modified=T0, owner_account_id=OWNER,
                            locator=locator, headers='{"ContentType": "text/plain"}')  # fmt: skip
    layer.put(bucket, version, StoredBody(1, locator=locator), conditions)


def _read(layer: ObjectLayer, key: str, version_id: str | None = None) -> ObjectVersion:
    return layer.read("b", key, version_id, marker_headers=True)


def _versions(walrus_db: Database, key: str) -> list[tuple[str, bool]]:
    with walrus_db.session() as s:
        q = select(ObjectVersion.version_id, ObjectVersion.is_latest).where(ObjectVersion.key == key)
        return [(v, bool(latest)) for v, latest in s.execute(q.order_by(ObjectVersion.id))]


def test_a_new_version_reads_back_whole(
    layer: ObjectLayer, walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = add_bucket(walrus_db)
    locator = _blob(store, b"x")
    _put(layer, bucket, "k", locator)
    found = _read(layer, "k")
    assert (found.key, found.version_id, found.locator) == ("k", "null", locator)
    assert (found.size, found.etag) == (1, f'"{locator[-4:]}"')
    assert found.is_latest is True and found.is_delete_marker is False
    assert found.last_modified == T0 and found.last_modified.tzinfo is not None
    assert found.headers == '{"ContentType": "text/plain"}' and found.metadata_ == "{}"
    with pytest.raises(CloudError) as err:
        _read(layer, "missing")
    assert err.value.code == "NoSuchKey"


def test_replacing_a_null_version_deletes_its_blob_and_then_its_queue_row(
    layer: ObjectLayer, walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = add_bucket(walrus_db)
    old, new = _blob(store, b"old"), _blob(store, b"new")
    _put(layer, bucket, "k", old)
    _put(layer, bucket, "k", new)
    assert not store.exists(old)  # deleted before the PUT returned
    assert store.exists(new)
    assert _versions(walrus_db, "k") == [("null", True)]
    assert _read(layer, "k").locator == new
    writer.run(lambda _s: None)  # a later batch: the queue row is gone by then
    with walrus_db.session() as s:
        assert list(s.scalars(select(Garbage.locator))) == []


def test_versioned_puts_keep_older_versions(
    layer: ObjectLayer, walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = add_bucket(walrus_db, versioning="Enabled")
    first, second = _blob(store, b"1"), _blob(store, b"2")
    _put(layer, bucket, "k", first, "v1")
    _put(layer, bucket, "k", second, "v2")
    assert _versions(walrus_db, "k") == [("v1", False), ("v2", True)]
    assert _read(layer, "k").locator == second
    assert _read(layer, "k", "v1").locator == first
    assert store.exists(first) and store.exists(second)
    # Suspended versioning: a "null" version becomes the newest, the others stay.
    third = _blob(store, b"3")
    _put(layer, bucket, "k", third)
    assert _versions(walrus_db, "k") == [("v1", False), ("v2", False), ("null", True)]


def test_a_delete_marker_reads_as_no_such_key_with_its_headers(
    layer: ObjectLayer, walrus_db: Database, writer: GroupCommitter
) -> None:
    add_bucket(walrus_db, versioning="Enabled")
    marker = ObjectVersion(bucket="b", key="k", version_id="m1", is_latest=True, is_delete_marker=True,
                           last_modified=T0, owner_account_id=OWNER)  # fmt: skip
    writer.run(lambda s: _add(s, [marker]))
    with pytest.raises(CloudError) as err:
        _read(layer, "k")
    assert err.value.code == "NoSuchKey"
    assert ("x-amz-delete-marker", "true") in err.value.headers
    with pytest.raises(CloudError) as err:
        _read(layer, "k", "m1")
    assert err.value.code == "MethodNotAllowed"


def _version(key: str, locator: str | None, version_id: str = "null") -> ObjectVersion:
    return ObjectVersion(bucket="b", key=key, version_id=version_id, is_latest=True, size=1, etag='"e"',
                         last_modified=T0, owner_account_id=OWNER, locator=locator)  # fmt: skip


def test_one_batch_replacing_a_key_twice_keeps_the_last_version(
    layer: ObjectLayer, walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    """Concurrent PUTs to one key committed together: the last one wins, the others' blobs go."""
    add_bucket(walrus_db)
    old, first, second, other = (_blob(store, data) for data in (b"old", b"1", b"2", b"x"))
    _put(layer, _bucket_row(walrus_db), "k", old)
    with walrus_db.session() as s:
        _add(s, [_version("k", first), _version("j", other), _version("k", second)])
    writer.run(lambda _s: None)  # let the sweep of an earlier batch finish
    assert _versions(walrus_db, "k") == [("null", True)]
    assert _read(layer, "k").locator == second
    assert _read(layer, "j").locator == other
    with walrus_db.session() as s:
        assert set(s.scalars(select(Garbage.locator))) == {old, first}  # queued with the commit


def test_one_batch_of_versioned_puts_to_a_key_keeps_them_all(walrus_db: Database) -> None:
    add_bucket(walrus_db, versioning="Enabled")
    with walrus_db.session() as s:
        _add(s, [_version("k", "aa/" + "a" * 30, "v1"), _version("k", "bb/" + "b" * 30, "v2")])
    with walrus_db.session() as s:
        _add(s, [_version("k", None, "v3"), _version("k", "cc/" + "c" * 30)])  # then suspended
    assert _versions(walrus_db, "k") == [("v1", False), ("v2", False), ("v3", False), ("null", True)]


def _bucket_row(walrus_db: Database) -> Bucket:
    with walrus_db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        return found


def _latest(walrus_db: Database) -> set[tuple[str, str, str | None]]:
    with walrus_db.session() as s:
        q = select(ObjectVersion.bucket, ObjectVersion.key, ObjectVersion.locator).where(
            ObjectVersion.is_latest
        )
        return {(b, k, locator) for b, k, locator in s.execute(q)}


def test_a_batch_across_buckets_changes_only_its_own_keys(walrus_db: Database) -> None:
    """The batch's keys are looked up by bucket and by key apart: a key of one bucket must not
    replace the same key of the other bucket."""
    add_bucket(walrus_db, "b")
    add_bucket(walrus_db, "c")
    old = [
        ObjectVersion(bucket=bucket, key=key, version_id="null", is_latest=True, size=1, etag='"e"',
                      last_modified=T0, owner_account_id=OWNER, locator=f"{bucket}{key}/" + "o" * 30)
        for bucket in ("b", "c") for key in ("x", "y")
    ]  # fmt: skip
    with walrus_db.session() as s:
        _add(s, old)
    new = [_version("x", "nx/" + "n" * 30), _version("y", "ny/" + "n" * 30)]
    new[1].bucket = "c"
    with walrus_db.session() as s:
        _add(s, new)
    assert _latest(walrus_db) == {
        ("b", "x", "nx/" + "n" * 30),
        ("b", "y", "by/" + "o" * 30),
        ("c", "x", "cx/" + "o" * 30),
        ("c", "y", "ny/" + "n" * 30),
    }
    with walrus_db.session() as s:
        assert len(list(s.scalars(select(ObjectVersion.id)))) == 4


@contextmanager
def _traced(s: Session) -> Iterator[list[str]]:
    """The SQL that `s`'s SQLite connection runs, values inlined: SQLAlchemy's events do not see
    the statements `add_versions` runs on its DB-API cursor."""
    driver = s.connection().connection.driver_connection
    statements: list[str] = []
    driver.set_trace_callback(statements.append)
    try:
        yield statements
    finally:
        driver.set_trace_callback(None)


def test_a_batch_reads_the_objects_table_through_its_index(walrus_db: Database) -> None:
    """A batch costs the same with a million objects as with ten: none of its statements may scan
    the objects table (SQLite scanned it for `(bucket, key) IN (VALUES ...)`)."""
    if walrus_db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner scans small tables on purpose; the plan is SQLite's")
    add_bucket(walrus_db)
    with walrus_db.session() as s, _traced(s) as statements:
        _add(s, [_version("k", None), _version("j", None)])
        _add(s, [_version("k", None), _version("j", None)])
    plans = []
    with walrus_db.engine.connect() as conn:
        for statement in statements:
            if "objects" in statement:
                plans += [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement)]
    assert any("ix_objects_listing" in step for step in plans)
    assert not [step for step in plans if step.startswith("SCAN objects")], plans


def test_writers_of_one_key_take_turns_so_it_keeps_one_newest_version(walrus_db: Database) -> None:
    """Two transactions add a version of one key (versioned bucket, the key new): the second
    waits for the first to commit, then sees its version. On PostgreSQL neither row locks nor
    the read could stop it: the first version is a row still being inserted."""
    add_bucket(walrus_db, versioning="Enabled")
    opened = walrus_db.session()
    first = opened.__enter__()
    _add(first, [_version("k", None, "v1")])  # holds the key's lock until it commits
    second_done = threading.Event()

    def second() -> None:
        with walrus_db.session() as s:
            _add(s, [_version("k", None, "v2")])
        second_done.set()

    racer = threading.Thread(target=second)
    racer.start()
    try:
        assert not second_done.wait(0.5)  # it waits for the first writer
        if walrus_db.engine.dialect.name == "postgresql":  # where a writer of another key goes on meanwhile
            with walrus_db.session() as s:
                _add(s, [_version("other", None, "o1")])
    finally:
        opened.__exit__(None, None, None)
    racer.join(30)
    assert second_done.is_set()
    assert _versions(walrus_db, "k") == [("v1", False), ("v2", True)]


def test_a_request_sessions_new_version_reads_under_the_write_lock(walrus_db: Database) -> None:
    """A delete marker, a copy or a completed upload is added in its request's session: what it
    reads as the key's newest version must not change before it writes (else a PUT committed in
    between leaves two newest versions). SQLite: the lock is taken before the read, and a
    transaction that wrote already keeps the lock it has."""
    if walrus_db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock (PostgreSQL's key locks: test_writers_of_one_key_take_turns_...)")
    add_bucket(walrus_db, versioning="Enabled")
    with walrus_db.session() as s, _traced(s) as traced:
        _add(s, [_version("k", None, "m1")])
        _add(s, [_version("k", None, "m2")])
    statements = [t.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in t else "") for t in traced]
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements.count("BEGIN IMMEDIATE") == 1  # the second call is in the same transaction
    assert statements.index("BEGIN IMMEDIATE") < statements.index("SELECT")
    assert _versions(walrus_db, "k") == [("m1", False), ("m2", True)]


# -- conditional writes ----------------------------------------------------------------------------


def _refused(layer: ObjectLayer, bucket: Bucket, key: str, locator: str, conditions: WriteConditions) -> str:
    with pytest.raises(CloudError) as err:
        _put(layer, bucket, key, locator, conditions=conditions)
    return f"{err.value.status} {err.value.code}"


def test_if_none_match_writes_only_a_key_that_has_no_object(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    bucket = add_bucket(walrus_db, versioning="Enabled")
    new = WriteConditions(if_none_match="*")
    first, second, third = (_blob(store, data) for data in (b"1", b"2", b"3"))
    _put(layer, bucket, "k", first, "v1", new)
    assert _refused(layer, bucket, "k", second, new) == "412 PreconditionFailed"
    assert not store.exists(second)  # the refused write's blob is gone
    with walrus_db.session() as s:  # behind a delete marker the key has no object: the write goes ahead
        layer.delete(s, _bucket_row(walrus_db), "k", None, OWNER)
    _put(layer, bucket, "k", third, "v3", new)
    assert _read(layer, "k").locator == third


def test_if_match_writes_over_that_etag_only(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    bucket = add_bucket(walrus_db)
    first, second, third = (_blob(store, data) for data in (b"1", b"2", b"3"))
    assert _refused(layer, bucket, "k", first, WriteConditions(if_match='"x"')) == "404 NoSuchKey"
    _put(layer, bucket, "k", first)
    etag = _read(layer, "k").etag
    assert (
        _refused(layer, bucket, "k", second, WriteConditions(if_match='"other"')) == "412 PreconditionFailed"
    )
    _put(layer, bucket, "k", third, conditions=WriteConditions(if_match=etag))
    assert _read(layer, "k").locator == third


def test_a_condition_that_held_early_and_fails_at_commit_is_a_conflict(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    """Checked before the body was read, then another write got in: 409, not 412 (as S3)."""
    bucket = add_bucket(walrus_db)
    early = layer.check_early("b", "k", WriteConditions(if_none_match="*"))
    assert early is not None and early.checked_early
    _put(layer, bucket, "k", _blob(store, b"other writer"))
    assert _refused(layer, bucket, "k", _blob(store, b"mine"), early) == "409 ConditionalRequestConflict"
    with pytest.raises(CloudError) as err:  # and refused at once when it no longer holds
        layer.check_early("b", "k", WriteConditions(if_none_match="*"))
    assert err.value.code == "PreconditionFailed"


def test_in_one_batch_the_first_of_two_if_none_match_writes_wins(walrus_db: Database) -> None:
    add_bucket(walrus_db)
    new = WriteConditions(if_none_match="*")
    with walrus_db.session() as s:
        answers = add_versions(s, [Write(_version("k", None, "null"), new), Write(_version("k", None), new)])
    assert answers[0] is None and answers[1] is not None and answers[1].code == "PreconditionFailed"
    assert _versions(walrus_db, "k") == [("null", True)]


def test_if_none_match_takes_only_a_star() -> None:
    with pytest.raises(CloudError) as err:
        WriteConditions.of({"IfNoneMatch": '"abc"'})
    assert err.value.code == "NotImplemented"
    assert WriteConditions.of({}) is None


# -- deletes and delete markers ---------------------------------------------------------------------


def test_deleting_in_a_versioned_bucket_adds_a_marker_and_deleting_it_restores_the_object(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    bucket = add_bucket(walrus_db, versioning="Enabled")
    locator = _blob(store, b"1")
    _put(layer, bucket, "k", locator, "v1")
    with walrus_db.session() as s:
        answer = layer.delete(s, _bucket_row(walrus_db), "k", None, OWNER)
    assert answer["DeleteMarker"] is True and _versions(walrus_db, "k") == [
        ("v1", False),
        (answer["VersionId"], True),
    ]
    with walrus_db.session() as s:
        assert (
            layer.delete(s, _bucket_row(walrus_db), "k", answer["VersionId"], OWNER)["DeleteMarker"] is True
        )
    assert _versions(walrus_db, "k") == [("v1", True)] and store.exists(locator)


def test_a_marker_in_a_suspended_bucket_replaces_the_null_version_and_queues_its_blob(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    """The same rule for a DeleteObject's marker and for lifecycle's (one implementation)."""
    bucket = add_bucket(walrus_db, versioning="Suspended")
    locator = _blob(store, b"1")
    _put(layer, bucket, "k", locator)
    with walrus_db.session() as s:
        layer.add_delete_marker(s, _bucket_row(walrus_db), "k", OWNER, T0)
        queued = garbage.queued(s)
        rows = s.scalars(select(ObjectVersion).where(ObjectVersion.key == "k")).all()
        assert [(r.is_delete_marker, r.last_modified) for r in rows] == [(True, T0)]
    assert queued == [locator]
    assert _versions(walrus_db, "k") == [("null", True)]
    with pytest.raises(CloudError):
        _read(layer, "k")


def test_a_version_the_session_loaded_is_not_stale_after_a_new_version(
    walrus_db: Database, layer: ObjectLayer
) -> None:
    add_bucket(walrus_db, versioning="Enabled")
    with walrus_db.session() as s:
        _add(s, [_version("k", None, "v1")])
        loaded = s.scalars(select(ObjectVersion).where(ObjectVersion.key == "k")).one()
        assert loaded.is_latest
        _add(s, [_version("k", None, "v2")])
        assert loaded.is_latest is False


def test_deleting_in_an_unversioned_bucket_removes_the_object_and_queues_its_blobs(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    bucket = add_bucket(walrus_db)
    locator = _blob(store, b"1")
    _put(layer, bucket, "k", locator)
    with walrus_db.session() as s:
        assert layer.delete(s, _bucket_row(walrus_db), "k", None, OWNER) == {}
        assert garbage.queued(s) == [locator]
    assert _versions(walrus_db, "k") == []


def test_dropping_an_upload_queues_its_parts(walrus_db: Database, layer: ObjectLayer) -> None:
    add_bucket(walrus_db)
    with walrus_db.session() as s:
        s.add(Upload(upload_id="u1", bucket="b", key="k", initiated=T0, owner_account_id=OWNER))
        s.add(
            Part(
                upload_id="u1", part_number=1, size=1, etag='"p"', locator="pp/" + "p" * 30, last_modified=T0
            )
        )
    with walrus_db.session() as s:
        upload = s.get(Upload, "u1")
        assert upload is not None
        layer.drop_upload(s, upload)
        assert garbage.queued(s) == ["pp/" + "p" * 30]
    with walrus_db.session() as s:
        assert s.get(Upload, "u1") is None and not s.scalars(select(Part)).all()


def test_buckets_encrypt_by_their_configuration_else_by_the_clouds_default(
    walrus_db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = add_bucket(walrus_db)
    assert ObjectLayer(walrus_db, store, writer, default_encryption=True).bucket_sse(bucket) == "AES256"
    assert ObjectLayer(walrus_db, store, writer, default_encryption=False).bucket_sse(bucket) == ""
    bucket.encryption = '[{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]'
    assert ObjectLayer(walrus_db, store, writer, default_encryption=False).bucket_sse(bucket) == "AES256"


def test_an_encrypted_versions_bytes_read_back_through_its_data_key(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer
) -> None:
    bucket = add_bucket(walrus_db)
    sealed = layer.seal(layer.sealing({"ServerSideEncryption": "AES256"}, bucket))
    assert sealed.cipher is not None
    plain = b"secret bytes " * 100
    stored = sealed.cipher.stream.update(plain)
    version = ObjectVersion(bucket="b", key="k", version_id="null", is_latest=True, size=len(plain),
                            etag='"e"', last_modified=T0, owner_account_id=OWNER, body=stored,
                            **sealed.fields())  # fmt: skip
    layer.put(bucket, version, StoredBody(len(plain), inline=stored), None)
    found = layer.read("b", "k", None)
    assert found.body == stored != plain and found.sse == "AES256"
    assert open_body(found, 13, 40, layer.data_keys(found, None)) == plain[13:53]


def test_a_ranged_read_of_a_multipart_object_unwraps_only_the_keys_of_the_parts_it_reads(
    walrus_db: Database, store: FilesystemObjectStore, layer: ObjectLayer, monkeypatch: pytest.MonkeyPatch
) -> None:
    plain = [bytes([65 + n]) * 1000 for n in range(5)]
    parts = []
    for number, data in enumerate(plain, 1):
        new = layer.keys.new_key(Sealing(SSE_S3))
        assert new is not None
        parts.append([_blob(store, crypt(new.key, 0, data)), len(data), '"e"', new.wrapped, number, {}])
    version = ObjectVersion(bucket="b", key="k", version_id="null", is_latest=True, size=5000,
                            etag='"e-5"', last_modified=T0, owner_account_id=OWNER,
                            parts=json.dumps(parts), sse=SSE_S3)  # fmt: skip
    unwrapped: list[str] = []
    unwrap = layer.keys.unwrap

    def counting(wrapped: str, mode: str, customer: CustomerKey | None) -> bytes:
        unwrapped.append(wrapped)
        return unwrap(wrapped, mode, customer)

    monkeypatch.setattr(layer.keys, "unwrap", counting)
    monkeypatch.setattr(runtime, "_layer", layer)  # blob_reads opens blobs in the layer's store
    keys = layer.data_keys(version, None)
    assert unwrapped == []  # nothing until a segment is read
    assert b"".join(chunks(open_body(version, 2100, 1800, keys))) == b"".join(plain)[2100:3900]
    assert unwrapped == [parts[2][3], parts[3][3]]  # parts 3 and 4 only
    assert b"".join(chunks(open_body(version, 2000, 10, keys))) == plain[2][:10]
    assert len(unwrapped) == 2  # each key once
