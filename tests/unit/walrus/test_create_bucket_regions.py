"""CreateBucket on a bucket the caller already owns, by the cloud's region name: S3 answers 200 OK
and resets the bucket's ACL in us-east-1 (its legacy behaviour), 409 BucketAlreadyOwnedByYou in
every other region. (The functional cloud has one region, not us-east-1: this covers the other.)"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from mallee.core.context import Headers, HttpRequest, RequestContext
from mallee.core.errors import CloudError
from mallee.db import migrate
from mallee.db.session import Database
from mallee.services.walrus.buckets import create_bucket
from mallee.services.walrus.tables import Bucket

ACCOUNT = "111122223333"
# An ACL granting another account: new buckets need ACLs on for it (and take no public ACL).
GRANTED = {"ObjectOwnership": "ObjectWriter", "GrantRead": 'id="444455556666"'}


@pytest.fixture
def db(tmp_path: Path) -> Iterator[Database]:
    database = Database(f"sqlite:///{tmp_path / 'walrus.db'}")
    migrate.upgrade(database.engine, "walrus")
    yield database
    database.dispose()


def _create(db: Database, region: str, **params: object) -> dict[str, object]:
    request = HttpRequest("PUT", "/b", "", Headers())
    with db.session() as s:
        ctx = RequestContext(request, "req", region, account_id=ACCOUNT, session=s)
        return create_bucket(ctx, {"Bucket": "legacy-bucket", **params}) or {}


def _acl(db: Database) -> list[dict[str, object]]:
    with db.session() as s:
        bucket = s.get(Bucket, "legacy-bucket")
        assert bucket is not None
        return list(json.loads(bucket.acl))


def test_us_east_1_answers_ok_and_resets_the_acl(db: Database) -> None:
    _create(db, "us-east-1", **GRANTED)
    assert _acl(db)
    assert _create(db, "us-east-1") == {"Location": "/legacy-bucket"}
    assert _acl(db) == []  # back to private


@pytest.mark.parametrize("region", ["mallee-1", "eu-west-1"])
def test_other_regions_answer_bucket_already_owned_by_you(db: Database, region: str) -> None:
    _create(db, region, **GRANTED)
    with pytest.raises(CloudError) as err:
        _create(db, region)
    assert (err.value.code, err.value.status) == ("BucketAlreadyOwnedByYou", 409)
    assert _acl(db)  # left as it was
