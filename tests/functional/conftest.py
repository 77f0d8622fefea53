"""Fixtures of the functional tests: one real cloud per session, a fresh account per test (and a
boto3 S3 client of it); and, for the modules that ask for it (`on_both_databases`), a second
cloud whose CLC, Walrus and SC keep their records in PostgreSQL."""

from __future__ import annotations

import atexit
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from support.cloud import Cloud, Keys, start_cloud, stop_cloud
from support.postgres import admin, start_server


@pytest.fixture(scope="session")
def sqlite_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """The session's cloud (every database SQLite). Named apart from `cloud`, which modules may
    override (`on_both_databases`): an override that asked for the fixture it overrides, with
    parameters, made pytest start a new session cloud for every test (~5 s each)."""
    c = start_cloud(tmp_path_factory.mktemp("cloud"))
    try:
        yield c
    finally:
        stop_cloud(c)


@pytest.fixture(scope="session")
def cloud(sqlite_cloud: Cloud) -> Cloud:
    return sqlite_cloud


@pytest.fixture(scope="session")
def postgresql_cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    """A cloud on PostgreSQL, as a production cloud runs: one database for the CLC's records
    (accounts, IAM, EC2), Walrus's (buckets, object versions) and the SC's (volumes, snapshots),
    each service's in a schema of its own (Config.database_url_for); the server is started here
    and stopped by pid afterwards."""
    try:
        server = start_server()
    except RuntimeError as exc:
        pytest.fail(str(exc), pytrace=False)
    atexit.register(server.stop)  # a session torn down abnormally
    try:
        admin(server.url("postgres"), "CREATE DATABASE mallee")
        # As the README says: `mallee up --database URL` (kept in mallee.toml for later runs).
        c = start_cloud(tmp_path_factory.mktemp("pgcloud"), up_args=("--database", server.url("mallee")))
        try:
            yield c
        finally:
            stop_cloud(c)
    finally:
        server.stop()


def on_both_databases() -> Callable[..., Cloud]:
    """A module's `cloud` fixture (`cloud = on_both_databases()`): each of its tests runs on the
    session's cloud (SQLite) and again on `postgresql_cloud`."""

    @pytest.fixture(params=["sqlite", "postgresql"])
    def cloud(request: pytest.FixtureRequest, sqlite_cloud: Cloud) -> Cloud:
        if request.param == "sqlite":
            return sqlite_cloud
        found: Cloud = request.getfixturevalue("postgresql_cloud")
        return found

    return cloud


@pytest.fixture
def account(cloud: Cloud) -> Keys:
    return cloud.new_account()


@pytest.fixture
def s3(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("s3", account)
