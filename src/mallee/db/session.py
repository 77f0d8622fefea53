"""Engines and sessions: SQLite (WAL) for the all-in-one default, PostgreSQL for production."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, cast

from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session, sessionmaker

from mallee.core import open_transactions

# How long a SQLite connection waits for another's write lock (its busy handler sleeps meanwhile).
BUSY_TIMEOUT_MS = 30_000


class WriteLockBusy(Exception):
    """Another connection holds SQLite's write lock, and the caller chose not to wait for it."""


def make_engine(url: str, *, power_safe: bool = False) -> Engine:
    """`power_safe`: on SQLite, every commit is on disk before it returns (PostgreSQL always is)."""
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg://" + url[len("postgresql://") :]
    if url.startswith("sqlite"):
        # As many pooled connections as handler threads, so none is reopened (and re-PRAGMAed) per request.
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": BUSY_TIMEOUT_MS / 1000},
            pool_size=16,
            max_overflow=8,
        )
        # WAL lets readers run while one writer commits. NORMAL sync is durable across process
        # crashes (only an OS crash or power loss can lose the last transactions); FULL also
        # fsyncs the WAL at each commit (about 0.4 ms on an SSD), which survives those too.
        synchronous = "FULL" if power_safe else "NORMAL"

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA synchronous={synchronous}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=10)


class Database:
    """An engine plus a session factory; `with db.session() as s:` commits on success."""

    def __init__(self, url: str, *, power_safe: bool = False) -> None:
        self.url = url
        self.engine = make_engine(url, power_safe=power_safe)
        self._factory = sessionmaker(self.engine, expire_on_commit=False)
        _report_transactions(self._factory)

    @contextmanager
    def session(self) -> Iterator[Session]:
        with self._factory() as session, _committed(session):
            yield session

    @contextmanager
    def write_session(self, *, wait: bool = True) -> Iterator[Session]:
        """`session()` whose transaction takes the database's write lock with its first statement
        (see `hold_write_lock`; `wait=False`: WriteLockBusy instead of waiting for SQLite's)."""
        with self.session() as s:
            hold_write_lock(s, wait=wait)
            yield s

    def held_session(self) -> Session:
        """A session on a connection of its own, kept out of the pool across its transactions
        (`held_write`): for one writer that commits many small transactions, where a new session
        and a pool check-out for each cost a batch of small PUTs ~10 % of its CPU. Give it back
        with `release_held`."""
        return self._factory(bind=self.engine.connect())

    @contextmanager
    def held_write(self, s: Session, *, wait: bool = True) -> Iterator[Session]:
        """One transaction of a held session, as `write_session` would run it. `s.info` starts
        empty each time."""
        s.info.clear()
        with _committed(s):
            hold_write_lock(s, wait=wait)
            yield s

    @staticmethod
    def release_held(s: Session) -> None:
        """Close a held session; its connection goes back to the pool."""
        connection = cast(Connection, s.get_bind())
        s.close()
        connection.close()

    def listen(self, identifier: str, fn: Callable[..., Any]) -> None:
        """Subscribe `fn` to a SQLAlchemy session event (after_flush, after_commit, …) of this
        database's sessions only."""
        event.listen(self._factory, identifier, fn)

    def dispose(self) -> None:
        self.engine.dispose()


def _report_transactions(factory: sessionmaker[Session]) -> None:
    """Tell `core.open_transactions` which thread holds a transaction (see there why). Session
    events, not the engine's: any engine-level listener slows every statement (~15 µs measured)."""

    @event.listens_for(factory, "after_begin")
    def _began(s: Session, _transaction: Any, _connection: Any) -> None:
        if "mallee_tx_thread" not in s.info:
            s.info["mallee_tx_thread"] = open_transactions.began()

    @event.listens_for(factory, "after_transaction_end")
    def _ended(s: Session, transaction: Any) -> None:
        if transaction.parent is None and "mallee_tx_thread" in s.info:
            open_transactions.ended(s.info.pop("mallee_tx_thread"))


@contextmanager
def _committed(s: Session) -> Iterator[None]:
    """Commit what the block did in `s` (an unused session has nothing to commit), or roll it back."""
    try:
        yield
        if s.in_transaction():
            s.commit()
    except BaseException:
        s.rollback()
        raise


def hold_write_lock(s: Session, names: Iterable[str] = (), *, wait: bool = True) -> None:
    """Make `s`'s transaction hold the write lock for what `names` name (SQLite: the whole
    database) from now on, so that nothing it reads of them next can change before it writes,
    even from another process. Take it before that read.

    SQLite: BEGIN IMMEDIATE, unless a write of this transaction took the lock already (pysqlite
    begins a transaction only at the first write, so reads before it see whatever others commit
    meanwhile). PostgreSQL: a transaction-scoped advisory lock per name, taken in one order
    (two transactions never wait for each other in a circle); writers of other names go on. Row
    locks would not do: a row another transaction is inserting cannot be locked."""
    conn = s.connection()
    if conn.dialect.name == "postgresql":
        wanted = sorted(set(names))
        if wanted:
            conn.exec_driver_sql(_ADVISORY_LOCKS, {"names": wanted})
        return
    if conn.dialect.name != "sqlite":
        return
    driver = conn.connection.driver_connection
    if driver is None or driver.in_transaction:
        return
    if wait:
        driver.execute("BEGIN IMMEDIATE")  # on the DB-API connection: once per batch of PUTs
        return
    # An event loop must not sleep in SQLite's busy handler while another connection writes.
    driver.execute("PRAGMA busy_timeout = 0")
    try:
        driver.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if driver.in_transaction or "locked" not in str(exc):
            raise
        raise WriteLockBusy(str(exc)) from exc
    finally:
        driver.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")


# One lock per name, in the order of their hashes (a collision only makes two names share one).
_ADVISORY_LOCKS = (
    "SELECT pg_advisory_xact_lock(h) FROM "
    "(SELECT DISTINCT hashtextextended(n, 0) AS h FROM unnest(%(names)s::text[]) AS n ORDER BY h) AS wanted"
)
