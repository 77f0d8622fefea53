"""What the CLC's and Walrus's metrics pages read from their databases when scraped."""

from __future__ import annotations

import datetime as _dt

from prometheus_client.parser import text_string_to_metric_families

from db.conftest import add_bucket
from mallee.core import metrics
from mallee.core.metrics import Reading
from mallee.db.session import Database
from mallee.services.clc.instance_metrics import instances_by_state
from mallee.services.clc.tables import Account, Instance
from mallee.services.walrus.storage_metrics import stored


def read(reading: Reading) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(metrics.render(reading).decode())
        for s in family.samples
        if s.name.startswith(("mallee_instances", "mallee_walrus"))
    }


def _instance(db: Database, n: int, state: str) -> None:
    with db.session() as s:
        if s.get(Account, "123456789012") is None:
            s.add(Account(id="123456789012", name="acme", created=_dt.datetime.now(_dt.UTC)))
            s.flush()
        s.add(
            Instance(
                id=f"i-{n:017x}",
                reservation_id="r-0000000000000000a",
                account_id="123456789012",
                image_id="ami-1",
                instance_type="t1.micro",
                zone="z",
                state=state,
                desired="running",
                launch_time=_dt.datetime.now(_dt.UTC),
            )
        )


def test_instances_are_counted_in_every_state(database: Database) -> None:
    for n, state in enumerate(("running", "running", "pending", "terminated")):
        _instance(database, n, state)
    found = read(instances_by_state(database))
    assert found == {
        ("mallee_instances", (("state", "pending"),)): 1,
        ("mallee_instances", (("state", "running"),)): 2,
        ("mallee_instances", (("state", "shutting-down"),)): 0,
        ("mallee_instances", (("state", "terminated"),)): 1,
        ("mallee_instances", (("state", "stopping"),)): 0,
        ("mallee_instances", (("state", "stopped"),)): 0,
    }


def test_walrus_counts_its_buckets(walrus_db: Database) -> None:
    assert read(stored(walrus_db))[("mallee_walrus_buckets", ())] == 0
    add_bucket(walrus_db, "one")
    add_bucket(walrus_db, "two")
    found = read(stored(walrus_db))
    assert found[("mallee_walrus_buckets", ())] == 2
    assert found[("mallee_walrus_objects", ())] == found[("mallee_walrus_bytes", ())] == 0
