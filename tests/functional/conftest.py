"""Fixtures of the functional tests: one real cloud per session, a fresh account per test (and a
boto3 S3 client of it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from support.cloud import Cloud, Keys, start_cloud, stop_cloud


@pytest.fixture(scope="session")
def cloud(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    c = start_cloud(tmp_path_factory.mktemp("cloud"))
    try:
        yield c
    finally:
        stop_cloud(c)


@pytest.fixture
def account(cloud: Cloud) -> Keys:
    return cloud.new_account()


@pytest.fixture
def s3(cloud: Cloud, account: Keys) -> Any:
    return cloud.client("s3", account)
