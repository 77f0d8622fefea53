"""Alembic migrations, run in-process. Each service with a database has its own migration tree
under `db/migrations/<service>/`; the tree's scripts create tables with explicit columns, so they
never import service code."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine

MIGRATIONS = Path(__file__).parent / "migrations"


def _alembic_config(tree: str, engine: Engine) -> AlembicConfig:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS / tree))
    cfg.attributes["engine"] = engine
    return cfg


def upgrade(engine: Engine, tree: str, revision: str = "head") -> None:
    if engine.dialect.name == "postgresql":
        _make_own_schema(engine)
    command.upgrade(_alembic_config(tree, engine), revision)


def _make_own_schema(engine: Engine) -> None:
    """Make the schema the connection's search path names first, when it names one of its own (a
    service sharing the cloud's database, see Config.database_url_for); the default path
    ("$user", public) is left alone."""
    with engine.begin() as conn:
        first = str(conn.execute(text("SHOW search_path")).scalar_one()).split(",")[0].strip()
        if first and first != "public" and not first.startswith('"$user"'):
            conn.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{first.strip(chr(34))}"'))


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def head_revision(tree: str, engine: Engine) -> str | None:
    return ScriptDirectory.from_config(_alembic_config(tree, engine)).get_current_head()
