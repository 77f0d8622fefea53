"""Fixtures of the database tests: every test runs against a real SQLite file and a real PostgreSQL.

The PostgreSQL server (support/postgres.py) is started once per session; each test gets its own
database on it (CREATE DATABASE t_<random>), dropped afterwards.
"""

from __future__ import annotations

import atexit
import datetime as _dt
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest

from mallee.db import migrate
from mallee.db.session import Database
from mallee.services.walrus.tables import Bucket
from support.postgres import PostgresServer, admin, start_server

TEST_DB = "mallee_test"


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    # Backstop: if the session is torn down abnormally, still stop the server at interpreter exit.
    atexit.register(server.stop)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres_url(postgres_server: PostgresServer) -> str:
    """`postgresql://postgres@127.0.0.1:<port>/mallee_test` on the session's throwaway server."""
    admin(postgres_server.url("postgres"), f"CREATE DATABASE {TEST_DB}")
    return postgres_server.url(TEST_DB)


# -- per-test databases -------------------------------------------------------------------------


def _with_database(url: str, name: str) -> str:
    return url.rsplit("/", 1)[0] + "/" + name


ENGINES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]


@pytest.fixture(params=ENGINES)
def blank_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty, unmigrated database of its own: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        db = Database(f"sqlite:///{tmp_path / 'mallee.db'}")
        try:
            yield db
        finally:
            db.dispose()
        return

    base_url: str = request.getfixturevalue("postgres_url")
    name = "t_" + secrets.token_hex(6)
    maintenance = _with_database(base_url, "postgres")
    admin(maintenance, f"CREATE DATABASE {name}")
    db = Database(_with_database(base_url, name))
    try:
        yield db
    finally:
        db.dispose()
        admin(maintenance, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def walrus_db(blank_database: Database) -> Database:
    """A database of its own, migrated to the head of Walrus's tree."""
    migrate.upgrade(blank_database.engine, "walrus")
    return blank_database


T0 = _dt.datetime(2026, 1, 10, 15, 30, tzinfo=_dt.UTC)
OWNER = "111122223333"


def add_bucket(db: Database, name: str = "b", versioning: str = "") -> Bucket:
    """A bucket row of OWNER's, made at T0."""
    with db.session() as s:
        bucket = Bucket(name=name, owner_account_id=OWNER, created=T0, versioning=versioning)
        s.add(bucket)
    return bucket


@pytest.fixture
def database(blank_database: Database) -> Database:
    """A database of its own, migrated to the head of the CLC tree."""
    migrate.upgrade(blank_database.engine, "clc")
    return blank_database
