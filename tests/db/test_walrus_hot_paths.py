"""Walrus's bucket cache on SQLite and PostgreSQL: the rows it serves and their invalidation (the
object layer's hot paths: test_object_layer.py)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import update

from db.conftest import OWNER, T0, add_bucket
from mallee.core.interprocess import SharedCounter
from mallee.db.session import Database
from mallee.services.walrus.bucket_cache import BucketCache
from mallee.services.walrus.tables import Bucket, ObjectVersion


@pytest.fixture
def generation(tmp_path: Path) -> Iterator[SharedCounter]:
    counter = SharedCounter(tmp_path / "buckets.generation")
    yield counter
    counter.close()


# -- the bucket cache ---------------------------------------------------------------------------


def test_the_cache_serves_the_same_row_until_a_bucket_changes(
    walrus_db: Database, generation: SharedCounter
) -> None:
    cache = BucketCache(walrus_db, generation)
    add_bucket(walrus_db)
    first = cache.get("b")
    assert first is not None and first.policy is None
    assert cache.get("b") is first  # from memory
    with walrus_db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        found.policy = '{"Statement": []}'
    changed = cache.get("b")
    assert changed is not first and changed is not None and changed.policy == '{"Statement": []}'


def test_statements_on_the_buckets_table_invalidate_too(
    walrus_db: Database, generation: SharedCounter
) -> None:
    cache = BucketCache(walrus_db, generation)
    add_bucket(walrus_db)
    assert cache.get("b") is not None
    with walrus_db.session() as s:
        s.execute(update(Bucket).where(Bucket.name == "b").values(versioning="Enabled"))
    found = cache.get("b")
    assert found is not None and found.versioning == "Enabled"
    with walrus_db.session() as s:
        s.delete(s.get(Bucket, "b"))
    assert cache.get("b") is None


def test_other_commits_and_rollbacks_keep_the_cache(walrus_db: Database, generation: SharedCounter) -> None:
    cache = BucketCache(walrus_db, generation)
    add_bucket(walrus_db)
    first = cache.get("b")
    with walrus_db.session() as s:
        s.add(ObjectVersion(bucket="b", key="k", version_id="null", is_latest=True, last_modified=T0,
                            owner_account_id=OWNER))  # fmt: skip
    with pytest.raises(RuntimeError), walrus_db.session() as s:
        found = s.get(Bucket, "b")
        assert found is not None
        found.policy = "{}"
        s.flush()
        raise RuntimeError("rolled back")
    assert cache.get("b") is first


def test_a_change_committed_by_another_worker_is_seen_at_once(
    walrus_db: Database, generation: SharedCounter
) -> None:
    """Two workers: their own engines and caches, one generation file."""
    mine = BucketCache(walrus_db, generation)
    other_db = Database(walrus_db.url)
    other_counter = SharedCounter(generation.path)
    try:
        BucketCache(other_db, other_counter)
        add_bucket(walrus_db)
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


def test_a_load_that_raced_with_a_bucket_change_is_not_kept(
    walrus_db: Database, generation: SharedCounter
) -> None:
    cache = BucketCache(walrus_db, generation)
    add_bucket(walrus_db)

    class Racing:
        """Commits a bucket change just after the cache's own load read the old row."""

        @contextmanager
        def session(self) -> Iterator[object]:
            with walrus_db.session() as s:
                yield s
            with walrus_db.session() as other:
                found = other.get(Bucket, "b")
                assert found is not None
                found.versioning = "Enabled"

    cache._db = Racing()  # type: ignore[assignment]
    stale = cache.get("b")
    assert stale is not None and stale.versioning == ""  # what it read before the change
    cache._db = walrus_db
    fresh = cache.get("b")
    assert fresh is not None and fresh.versioning == "Enabled"
