"""Walrus's bucket cache on SQLite and PostgreSQL: the rows it serves and their invalidation (the
object layer's hot paths: test_object_layer.py)."""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import update

from mallee.core.interprocess import SharedCounter
from mallee.db import migrate
from mallee.db.session import Database
from mallee.services.walrus.bucket_cache import BucketCache
from mallee.services.walrus.tables import Bucket, ObjectVersion

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
