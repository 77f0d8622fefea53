"""Walrus's hot paths on SQLite and PostgreSQL: the bucket cache and its invalidation, new versions
recorded by the group committer (Core statements), `read_version`, and the blobs a replaced
version leaves (deleted right after the commit, their queue rows in a later batch)."""

from __future__ import annotations

import datetime as _dt
import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from mallee.core.errors import CloudError
from mallee.core.interprocess import SharedCounter
from mallee.db import migrate
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore
from mallee.services.walrus import garbage
from mallee.services.walrus.bucket_cache import BucketCache
from mallee.services.walrus.objects import add_version, add_versions, read_version
from mallee.services.walrus.tables import Bucket, Garbage, ObjectVersion

T0 = _dt.datetime(2026, 1, 10, 15, 30, tzinfo=_dt.UTC)
OWNER = "111122223333"


@pytest.fixture
def db(blank_database: Database) -> Database:
    migrate.upgrade(blank_database.engine, "walrus")
    return blank_database


@pytest.fixture
def generation(tmp_path: Path) -> Iterator[SharedCounter]:
    counter = SharedCounter(tmp_path / "buckets.generation")
    yield counter
    counter.close()


@pytest.fixture
def store(tmp_path: Path) -> FilesystemObjectStore:
    return FilesystemObjectStore(tmp_path / "walrus")


@pytest.fixture
def writer(db: Database, store: FilesystemObjectStore) -> Iterator[GroupCommitter]:
    committer: GroupCommitter = GroupCommitter(
        db, after_commit=lambda s: garbage.remove(garbage.queued(s), store, committer)
    )
    yield committer
    committer.close()


def _bucket(db: Database, name: str = "b", versioning: str = "") -> Bucket:
    with db.session() as s:
        bucket = Bucket(name=name, owner_account_id=OWNER, created=T0, versioning=versioning)
        s.add(bucket)
    return bucket


# -- the bucket cache ---------------------------------------------------------------------------


def test_the_cache_serves_the_same_row_until_a_bucket_changes(
    db: Database, generation: SharedCounter
) -> None:
    cache = BucketCache(db, generation)
    _bucket(db)
    first = cache.get("b")
    assert first is not None and first.policy is None
    assert cache.get("b") is first  # from memory
    with db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        found.policy = '{"Statement": []}'
    changed = cache.get("b")
    assert changed is not first and changed is not None and changed.policy == '{"Statement": []}'


def test_statements_on_the_buckets_table_invalidate_too(db: Database, generation: SharedCounter) -> None:
    cache = BucketCache(db, generation)
    _bucket(db)
    assert cache.get("b") is not None
    with db.session() as s:
        s.execute(update(Bucket).where(Bucket.name == "b").values(versioning="Enabled"))
    found = cache.get("b")
    assert found is not None and found.versioning == "Enabled"
    with db.session() as s:
        s.delete(s.get(Bucket, "b"))
    assert cache.get("b") is None


def test_other_commits_and_rollbacks_keep_the_cache(db: Database, generation: SharedCounter) -> None:
    cache = BucketCache(db, generation)
    _bucket(db)
    first = cache.get("b")
    with db.session() as s:
        s.add(ObjectVersion(bucket="b", key="k", version_id="null", is_latest=True, last_modified=T0,
                            owner_account_id=OWNER))  # fmt: skip
    with pytest.raises(RuntimeError), db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        found.policy = "{}"
        s.flush()
        raise RuntimeError("rolled back")
    assert cache.get("b") is first


def test_a_change_committed_by_another_worker_is_seen_at_once(
    db: Database, generation: SharedCounter
) -> None:
    """Two workers: their own engines and caches, one generation file."""
    mine = BucketCache(db, generation)
    other_db = Database(db.url)
    other_counter = SharedCounter(generation.path)
    try:
        BucketCache(other_db, other_counter)
        _bucket(db)
        first = mine.get("b")
        assert first is not None and mine.get("b") is first
        with other_db.session() as s:
            found = s.get(Bucket, "b")
            assert found is not None
            found.policy = "{}"
        changed = mine.get("b")
        assert changed is not None and changed.policy == "{}"
    finally:
        other_counter.close()
        other_db.dispose()


def test_a_load_that_raced_with_a_bucket_change_is_not_kept(db: Database, generation: SharedCounter) -> None:
    cache = BucketCache(db, generation)
    _bucket(db)

    class Racing:
        """Commits a bucket change just after the cache's own load read the old row."""

        @contextmanager
        def session(self) -> Iterator[object]:
            with db.session() as s:
                yield s
            with db.session() as other:
                found = other.get(Bucket, "b")
                assert found is not None
                found.versioning = "Enabled"

    cache._db = Racing()  # type: ignore[assignment]
    stale = cache.get("b")
    assert stale is not None and stale.versioning == ""  # what it read before the change
    cache._db = db
    fresh = cache.get("b")
    assert fresh is not None and fresh.versioning == "Enabled"


# -- new versions through the group committer ----------------------------------------------------


def _blob(store: FilesystemObjectStore, data: bytes) -> str:
    writer = store.writer()
    writer.write(data)
    locator: str = writer.commit().locator
    return locator


def _put(writer: GroupCommitter, bucket: Bucket, key: str, locator: str, version_id: str = "null") -> None:
    version = ObjectVersion(bucket=bucket.name, key=key, version_id=version_id, is_latest=True, size=1,
                            etag='"e"', last_modified=T0, owner_account_id=OWNER, locator=locator,
                            headers='{"ContentType": "text/plain"}')  # fmt: skip
    writer.run(functools.partial(add_version, bucket=bucket, version=version))


def _read(db: Database, key: str, version_id: str | None = None) -> ObjectVersion:
    return read_version(db, "b", key, version_id, marker_headers=True)


def _versions(db: Database, key: str) -> list[tuple[str, bool]]:
    with db.session() as s:
        q = select(ObjectVersion.version_id, ObjectVersion.is_latest).where(ObjectVersion.key == key)
        return [(v, bool(latest)) for v, latest in s.execute(q.order_by(ObjectVersion.id))]


def test_a_new_version_reads_back_whole(
    db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = _bucket(db)
    locator = _blob(store, b"x")
    _put(writer, bucket, "k", locator)
    found = _read(db, "k")
    assert (found.key, found.version_id, found.locator) == ("k", "null", locator)
    assert (found.size, found.etag) == (1, '"e"')
    assert found.is_latest is True and found.is_delete_marker is False
    assert found.last_modified == T0 and found.last_modified.tzinfo is not None
    assert found.headers == '{"ContentType": "text/plain"}' and found.metadata_ == "{}"
    with pytest.raises(CloudError) as err:
        _read(db, "missing")
    assert err.value.code == "NoSuchKey"


def test_replacing_a_null_version_deletes_its_blob_and_then_its_queue_row(
    db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = _bucket(db)
    old, new = _blob(store, b"old"), _blob(store, b"new")
    _put(writer, bucket, "k", old)
    _put(writer, bucket, "k", new)
    assert not store.exists(old)  # deleted before the PUT returned
    assert store.exists(new)
    assert _versions(db, "k") == [("null", True)]
    assert _read(db, "k").locator == new
    writer.run(lambda _s: None)  # a later batch: the queue row is gone by then
    with db.session() as s:
        assert list(s.scalars(select(Garbage.locator))) == []


def test_versioned_puts_keep_older_versions(
    db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    bucket = _bucket(db, versioning="Enabled")
    first, second = _blob(store, b"1"), _blob(store, b"2")
    _put(writer, bucket, "k", first, "v1")
    _put(writer, bucket, "k", second, "v2")
    assert _versions(db, "k") == [("v1", False), ("v2", True)]
    assert _read(db, "k").locator == second
    assert _read(db, "k", "v1").locator == first
    assert store.exists(first) and store.exists(second)
    # Suspended versioning: a "null" version becomes the newest, the others stay.
    third = _blob(store, b"3")
    _put(writer, bucket, "k", third)
    assert _versions(db, "k") == [("v1", False), ("v2", False), ("null", True)]


def test_a_delete_marker_reads_as_no_such_key_with_its_headers(db: Database, writer: GroupCommitter) -> None:
    bucket = _bucket(db, versioning="Enabled")
    marker = ObjectVersion(bucket="b", key="k", version_id="m1", is_latest=True, is_delete_marker=True,
                           last_modified=T0, owner_account_id=OWNER)  # fmt: skip
    writer.run(functools.partial(add_version, bucket=bucket, version=marker))
    with pytest.raises(CloudError) as err:
        _read(db, "k")
    assert err.value.code == "NoSuchKey"
    assert ("x-amz-delete-marker", "true") in err.value.headers
    with pytest.raises(CloudError) as err:
        _read(db, "k", "m1")
    assert err.value.code == "MethodNotAllowed"


def _version(key: str, locator: str | None, version_id: str = "null") -> ObjectVersion:
    return ObjectVersion(bucket="b", key=key, version_id=version_id, is_latest=True, size=1, etag='"e"',
                         last_modified=T0, owner_account_id=OWNER, locator=locator)  # fmt: skip


def test_one_batch_replacing_a_key_twice_keeps_the_last_version(
    db: Database, store: FilesystemObjectStore, writer: GroupCommitter
) -> None:
    """Concurrent PUTs to one key committed together: the last one wins, the others' blobs go."""
    _bucket(db)
    old, first, second, other = (_blob(store, data) for data in (b"old", b"1", b"2", b"x"))
    _put(writer, _bucket_row(db), "k", old)
    with db.session() as s:
        add_versions(s, [_version("k", first), _version("j", other), _version("k", second)])
    writer.run(lambda _s: None)  # let the sweep of an earlier batch finish
    assert _versions(db, "k") == [("null", True)]
    assert _read(db, "k").locator == second
    assert _read(db, "j").locator == other
    with db.session() as s:
        assert set(s.scalars(select(Garbage.locator))) == {old, first}  # queued with the commit


def test_one_batch_of_versioned_puts_to_a_key_keeps_them_all(db: Database) -> None:
    _bucket(db, versioning="Enabled")
    with db.session() as s:
        add_versions(s, [_version("k", "aa/" + "a" * 30, "v1"), _version("k", "bb/" + "b" * 30, "v2")])
    with db.session() as s:
        add_versions(s, [_version("k", None, "v3"), _version("k", "cc/" + "c" * 30)])  # then suspended
    assert _versions(db, "k") == [("v1", False), ("v2", False), ("v3", False), ("null", True)]


def _bucket_row(db: Database) -> Bucket:
    with db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        return found


def _latest(db: Database) -> set[tuple[str, str, str | None]]:
    with db.session() as s:
        q = select(ObjectVersion.bucket, ObjectVersion.key, ObjectVersion.locator).where(
            ObjectVersion.is_latest
        )
        return {(b, k, locator) for b, k, locator in s.execute(q)}


def test_a_batch_across_buckets_changes_only_its_own_keys(db: Database) -> None:
    """The batch's keys are looked up by bucket and by key apart: a key of one bucket must not
    replace the same key of the other bucket."""
    _bucket(db, "b")
    _bucket(db, "c")
    old = [
        ObjectVersion(bucket=bucket, key=key, version_id="null", is_latest=True, size=1, etag='"e"',
                      last_modified=T0, owner_account_id=OWNER, locator=f"{bucket}{key}/" + "o" * 30)
        for bucket in ("b", "c") for key in ("x", "y")
    ]  # fmt: skip
    with db.session() as s:
        add_versions(s, old)
    new = [_version("x", "nx/" + "n" * 30), _version("y", "ny/" + "n" * 30)]
    new[1].bucket = "c"
    with db.session() as s:
        add_versions(s, new)
    assert _latest(db) == {
        ("b", "x", "nx/" + "n" * 30),
        ("b", "y", "by/" + "o" * 30),
        ("c", "x", "cx/" + "o" * 30),
        ("c", "y", "ny/" + "n" * 30),
    }
    with db.session() as s:
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


def test_a_batch_reads_the_objects_table_through_its_index(db: Database) -> None:
    """A batch costs the same with a million objects as with ten: none of its statements may scan
    the objects table (SQLite scanned it for `(bucket, key) IN (VALUES ...)`)."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL's planner scans small tables on purpose; the plan is SQLite's")
    _bucket(db)
    with db.session() as s, _traced(s) as statements:
        add_versions(s, [_version("k", None), _version("j", None)])
        add_versions(s, [_version("k", None), _version("j", None)])
    plans = []
    with db.engine.connect() as conn:
        for statement in statements:
            if "objects" in statement:
                plans += [row[-1] for row in conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement)]
    assert any("ix_objects_listing" in step for step in plans)
    assert not [step for step in plans if step.startswith("SCAN objects")], plans


def test_writers_of_one_key_take_turns_so_it_keeps_one_newest_version(db: Database) -> None:
    """Two transactions add a version of one key (versioned bucket, the key new): the second
    waits for the first to commit, then sees its version. On PostgreSQL neither row locks nor
    the read could stop it: the first version is a row still being inserted."""
    _bucket(db, versioning="Enabled")
    opened = db.session()
    first = opened.__enter__()
    add_versions(first, [_version("k", None, "v1")])  # holds the key's lock until it commits
    second_done = threading.Event()

    def second() -> None:
        with db.session() as s:
            add_versions(s, [_version("k", None, "v2")])
        second_done.set()

    racer = threading.Thread(target=second)
    racer.start()
    try:
        assert not second_done.wait(0.5)  # it waits for the first writer
        if db.engine.dialect.name == "postgresql":  # where a writer of another key goes on meanwhile
            with db.session() as s:
                add_versions(s, [_version("other", None, "o1")])
    finally:
        opened.__exit__(None, None, None)
    racer.join(30)
    assert second_done.is_set()
    assert _versions(db, "k") == [("v1", False), ("v2", True)]


def test_a_request_sessions_new_version_reads_under_the_write_lock(db: Database) -> None:
    """A delete marker, a copy or a completed upload is added in its request's session: what it
    reads as the key's newest version must not change before it writes (else a PUT committed in
    between leaves two newest versions). SQLite: the lock is taken before the read, and a
    transaction that wrote already keeps the lock it has."""
    if db.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock (PostgreSQL's key locks: test_writers_of_one_key_take_turns_...)")
    _bucket(db, versioning="Enabled")
    with db.session() as s, _traced(s) as traced:
        add_versions(s, [_version("k", None, "m1")])
        add_versions(s, [_version("k", None, "m2")])
    statements = [t.split()[0].upper() + (" IMMEDIATE" if "IMMEDIATE" in t else "") for t in traced]
    assert statements[0] == "BEGIN IMMEDIATE"
    assert statements.count("BEGIN IMMEDIATE") == 1  # the second call is in the same transaction
    assert statements.index("BEGIN IMMEDIATE") < statements.index("SELECT")
    assert _versions(db, "k") == [("m1", False), ("m2", True)]
