"""The CLC's Alembic tree on both engines: it upgrades, it is idempotent, and it builds exactly the
schema the SQLAlchemy models describe."""

from __future__ import annotations

import datetime as _dt

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, Table, inspect, select, text

import mallee.services.clc.tables  # noqa: F401  (registers the CLC tables on Base.metadata)
from mallee.db import migrate
from mallee.db.base import Base
from mallee.db.session import Database
from mallee.services.clc.tables import Account

CLC_TABLES = {
    "accounts",
    "instances",
    "users",
    "groups",
    "group_members",
    "access_keys",
    "inline_policies",
    "managed_policies",
    "policy_attachments",
    "roles",
    "instance_profiles",
    "services",
    "clusters",
    "storage_controllers",
    "instance_types",
    "key_pairs",
    "images",
    "launch_permissions",
    "tags",
    "vpcs",
    "subnets",
    "internet_gateways",
    "route_tables",
    "routes",
    "route_table_associations",
    "network_acls",
    "security_groups",
    "security_group_rules",
    "network_interfaces",
    "public_addresses",
    "volumes",
    "volume_attachments",
    "snapshots",
    "snapshot_permissions",
    "iam_instance_profile_associations",
    "instance_metadata_options",
}


def _tables(db: Database) -> set[str]:
    return set(inspect(db.engine).get_table_names())


def test_blank_database_has_no_revision(blank_database: Database) -> None:
    assert migrate.current_revision(blank_database.engine) is None
    assert _tables(blank_database) == set()


def test_upgrade_to_head(blank_database: Database) -> None:
    migrate.upgrade(blank_database.engine, "clc")
    head = migrate.head_revision("clc", blank_database.engine)
    assert head is not None
    assert migrate.current_revision(blank_database.engine) == head
    assert _tables(blank_database) == CLC_TABLES | {"alembic_version"}


def test_models_describe_every_clc_table() -> None:
    # Guards the comparison below: the metadata must hold the CLC tables, or there is nothing to compare.
    assert set(Base.metadata.tables) >= CLC_TABLES


def _clc_metadata() -> MetaData:
    """The CLC's tables only: other services' tables (Walrus's, the SC's) share Base.metadata once
    their modules are imported in the same test session, and live in databases of their own."""
    clc = MetaData()
    for name in CLC_TABLES:
        Base.metadata.tables[name].to_metadata(clc)
    return clc


def test_migrated_schema_matches_models(database: Database) -> None:
    with database.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"compare_type": True, "compare_server_default": True})
        diffs = compare_metadata(ctx, _clc_metadata())
    assert diffs == []


def test_upgrading_twice_is_a_noop(database: Database) -> None:
    engine = database.engine
    head = migrate.current_revision(engine)
    before = {t: inspect(engine).get_columns(t) for t in _tables(database)}
    with database.session() as s:
        s.add(Account(id="123456789012", name="keep-me", is_system=False, created=_dt.datetime.now(_dt.UTC)))

    migrate.upgrade(engine, "clc")

    assert migrate.current_revision(engine) == head
    after = {t: inspect(engine).get_columns(t) for t in _tables(database)}
    assert {t: [c["name"] for c in cols] for t, cols in after.items()} == {
        t: [c["name"] for c in cols] for t, cols in before.items()
    }
    with database.session() as s:
        assert s.scalars(select(Account.name)).all() == ["keep-me"]


def test_schema_comparison_sees_a_drifted_schema(database: Database) -> None:
    # The comparison above must be able to fail: drop an index the models declare and it is reported.
    with database.engine.begin() as conn:
        conn.exec_driver_sql("DROP INDEX ix_users_account_id")
    with database.engine.connect() as conn:
        diffs = compare_metadata(
            MigrationContext.configure(conn, opts={"compare_type": True}), _clc_metadata()
        )
    assert [(d[0], d[1].name) for d in diffs] == [("add_index", "ix_users_account_id")]


def _row(table: Table, **given: object) -> dict[str, object]:
    """A row for `table` with `given` and a plain value in every other required column."""
    now = _dt.datetime.now(_dt.UTC)
    values: dict[str, object] = {}
    for column in table.columns:
        if column.name in given or column.nullable or column.server_default is not None:
            continue
        kind = getattr(column.type, "impl", column.type).python_type
        values[column.name] = {str: "x", int: 1, bool: False, float: 1.0}.get(kind, now)
    return {**values, **given}


def test_upgrades_keep_the_rows_that_depend_on_an_instance(blank_database: Database) -> None:
    """A migration that rebuilds `instances` (SQLite's batch mode does, to drop a column default)
    drops the table, and with foreign keys on that deletes every row cascading from it. Rows made
    at 0013 are all there at the head."""
    engine = blank_database.engine
    migrate.upgrade(engine, "clc", "0013")
    tables = MetaData()
    tables.reflect(engine, only=["accounts", "instances", "instance_metadata_options"])
    with engine.begin() as conn:
        conn.execute(
            tables.tables["accounts"].insert().values(_row(tables.tables["accounts"], id="123456789012"))
        )
        instance = _row(tables.tables["instances"], id="i-0123456789abcdef0", account_id="123456789012")
        conn.execute(tables.tables["instances"].insert().values(instance))
        options = _row(tables.tables["instance_metadata_options"], instance_id="i-0123456789abcdef0")
        conn.execute(tables.tables["instance_metadata_options"].insert().values(options))
    migrate.upgrade(engine, "clc")
    with engine.connect() as conn:
        for name in ("instances", "instance_metadata_options"):
            assert conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() == 1, name


def test_upgrades_keep_the_permissions_of_images_and_snapshots(blank_database: Database) -> None:
    """The same for `images` and `snapshots` (0009 added columns to both): launch and
    create-volume permissions made at 0008 are all there at the head."""
    engine = blank_database.engine
    migrate.upgrade(engine, "clc", "0008")
    tables = MetaData()
    names = ["accounts", "images", "launch_permissions", "snapshots", "snapshot_permissions"]
    tables.reflect(engine, only=names)
    owner, other = "123456789012", "210987654321"
    rows = {
        "accounts": _row(tables.tables["accounts"], id=owner),
        "images": _row(tables.tables["images"], id="ami-0123456789abcdef0", account_id=owner),
        "launch_permissions": _row(
            tables.tables["launch_permissions"], image_id="ami-0123456789abcdef0", account_id=other
        ),
        "snapshots": _row(tables.tables["snapshots"], id="snap-0123456789abcdef0", account_id=owner),
        "snapshot_permissions": _row(
            tables.tables["snapshot_permissions"], snapshot_id="snap-0123456789abcdef0", account_id=other
        ),
    }
    with engine.begin() as conn:
        for name in names:
            conn.execute(tables.tables[name].insert().values(rows[name]))
    migrate.upgrade(engine, "clc")
    with engine.connect() as conn:
        for name in names:
            assert conn.execute(text(f"SELECT count(*) FROM {name}")).scalar_one() == 1, name
