"""Core statements compiled once per dialect and run straight on DB-API cursors.

For the hottest statements only (a small GET's one-row read, the rows a batch of PUTs writes):
for those, SQLAlchemy's per-execution work (connection wrapper, execution context, result
object) costs several times what the database does. Values are converted by the same bind and
result processors SQLAlchemy would use for the dialect, so rows go in and come back as they
would through it. Statements run this way are invisible to SQLAlchemy's events and to the ORM
session (whose transaction they may share: `session_cursor`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import Select
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.expression import ClauseElement

Processor = Callable[[Any], Any] | None


class Prepared:
    """`statement` compiled for `dialect`. Its bind parameters must be plain values (no
    expanding IN lists); a SELECT's rows come back as dicts keyed by its columns' labels."""

    def __init__(self, dialect: Dialect, statement: ClauseElement) -> None:
        compiled = cast(SQLCompiler, statement.compile(dialect=dialect))
        self._sql = compiled.string
        processors = {
            name: bind.type.dialect_impl(dialect).bind_processor(dialect)
            for bind, name in compiled.bind_names.items()  # by the name it has in the SQL
        }
        defaults = compiled.params  # every parameter; values the statement binds itself
        # Positional styles (SQLite's ?) take the values in placeholder order, named ones a dict.
        self._named = compiled.positiontup is None
        names = list(defaults) if compiled.positiontup is None else compiled.positiontup
        self._binds = [(name, defaults[name], processors.get(name)) for name in names]
        selected = statement.selected_columns if isinstance(statement, Select) else ()
        self._columns: list[tuple[str, Processor]] = [
            (str(column.key), column.type.dialect_impl(dialect).result_processor(dialect, None))
            for column in selected
        ]

    def _bound(self, params: Mapping[str, Any]) -> Any:
        values = []
        for name, default, process in self._binds:
            value = params.get(name, default)
            values.append(value if process is None else process(value))
        return dict(zip((name for name, _, _ in self._binds), values, strict=True)) if self._named else values

    def _row(self, row: Sequence[Any]) -> dict[str, Any]:
        return {
            key: value if process is None else process(value)
            for (key, process), value in zip(self._columns, row, strict=True)
        }

    def all(self, cursor: Any, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        cursor.execute(self._sql, self._bound(params))
        return [self._row(row) for row in cursor.fetchall()]

    def first(self, cursor: Any, params: Mapping[str, Any]) -> dict[str, Any] | None:
        cursor.execute(self._sql, self._bound(params))
        row = cursor.fetchone()
        return None if row is None else self._row(row)

    def execute_many(self, cursor: Any, rows: Sequence[Mapping[str, Any]]) -> None:
        if rows:
            cursor.executemany(self._sql, [self._bound(row) for row in rows])


_compiled: dict[tuple[str, str, str, ClauseElement], Prepared] = {}


def prepared(dialect: Dialect, statement: ClauseElement) -> Prepared:
    """`statement` (a module-level constant: it is cached by identity) compiled for `dialect`."""
    key = (dialect.name, dialect.driver, dialect.paramstyle, statement)
    found = _compiled.get(key)
    if found is None:
        found = _compiled[key] = Prepared(dialect, statement)
    return found


def first_row(engine: Engine, query: Select[Any], params: Mapping[str, Any]) -> dict[str, Any] | None:
    """`query`'s first row, read on a pooled DB-API connection of its own (returned to the pool,
    rolled back, after)."""
    connection = engine.raw_connection()
    try:
        cursor = connection.cursor()
        try:
            return prepared(engine.dialect, query).first(cursor, params)
        finally:
            cursor.close()
    finally:
        connection.close()


@contextmanager
def session_cursor(s: Session) -> Iterator[tuple[Dialect, Any]]:
    """A DB-API cursor in `s`'s transaction (its dialect with it)."""
    conn = s.connection()
    cursor = conn.connection.cursor()
    try:
        yield conn.dialect, cursor
    finally:
        cursor.close()
