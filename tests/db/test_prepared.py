"""Prepared statements on DB-API cursors (mallee.db.prepared), on SQLite and PostgreSQL: values
go in and come back exactly as through SQLAlchemy, and their writes belong to the session's
transaction."""

from __future__ import annotations

import datetime as _dt

import pytest
from sqlalchemy import (
    Boolean,
    Column,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    bindparam,
    insert,
    select,
    update,
)

from mallee.db.base import UTCDateTime
from mallee.db.prepared import first_row, prepared, session_cursor
from mallee.db.session import Database

_META = MetaData()
_T = Table(
    "prepared_t", _META,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("name", String(20)),
    Column("flag", Boolean),
    Column("at", UTCDateTime),
    Column("data", LargeBinary),
)  # fmt: skip
_INSERT = insert(_T).values({c.key: bindparam(c.key, type_=c.type) for c in _T.columns if not c.primary_key})
_BY_NAME = select(_T.c.id, _T.c.name.label("label"), _T.c.flag, _T.c.at, _T.c.data).where(
    _T.c.name == bindparam("name")
)
_CLEAR = update(_T).where(_T.c.name == bindparam("wanted")).values(flag=False)  # binds a value of its own
T0 = _dt.datetime(2026, 3, 1, 12, 0, 0, 250000, tzinfo=_dt.UTC)
DATA = bytes(range(256)) * 16  # every byte, NUL and invalid UTF-8 included
ROW = {"name": "a", "flag": True, "at": T0, "data": b""}


@pytest.fixture
def db(blank_database: Database) -> Database:
    _META.create_all(blank_database.engine)
    return blank_database


def test_rows_written_and_read_come_back_as_through_sqlalchemy(db: Database) -> None:
    rows = [
        {"name": "a", "flag": True, "at": T0, "data": DATA},
        {"name": "b", "flag": False, "at": T0 + _dt.timedelta(days=1), "data": None},
    ]
    with db.session() as s, session_cursor(s) as (dialect, cursor):
        prepared(dialect, _INSERT).execute_many(cursor, rows)
    found = first_row(db.engine, _BY_NAME, {"name": "a"})
    assert found is not None
    assert found["label"] == "a" and found["flag"] is True and found["data"] == DATA
    assert found["at"] == T0 and found["at"].tzinfo is not None
    with db.engine.connect() as conn:  # the same through SQLAlchemy
        assert dict(conn.execute(_BY_NAME, {"name": "a"}).one()._mapping) == found
        assert dict(conn.execute(_BY_NAME, {"name": "b"}).one()._mapping) == first_row(
            db.engine, _BY_NAME, {"name": "b"}
        )
    assert first_row(db.engine, _BY_NAME, {"name": "missing"}) is None


def test_a_statements_own_values_and_the_callers_are_both_bound(db: Database) -> None:
    with db.session() as s, session_cursor(s) as (dialect, cursor):
        prepared(dialect, _INSERT).execute_many(cursor, [ROW])
        prepared(dialect, _CLEAR).execute_many(cursor, [{"wanted": "a"}])
        assert [r["flag"] for r in prepared(dialect, _BY_NAME).all(cursor, {"name": "a"})] == [False]


def test_writes_on_the_sessions_cursor_roll_back_with_its_transaction(db: Database) -> None:
    with pytest.raises(RuntimeError), db.session() as s:
        with session_cursor(s) as (dialect, cursor):
            prepared(dialect, _INSERT).execute_many(cursor, [ROW])
        raise RuntimeError("the request failed")
    assert first_row(db.engine, _BY_NAME, {"name": "a"}) is None


def test_statements_are_compiled_once_per_dialect(db: Database) -> None:
    dialect = db.engine.dialect
    assert prepared(dialect, _BY_NAME) is prepared(dialect, _BY_NAME)
    assert prepared(dialect, _BY_NAME) is not prepared(dialect, _INSERT)
