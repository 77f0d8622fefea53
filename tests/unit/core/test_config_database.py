"""Where each service keeps its records (Config.database_url_for) and `mallee up --database URL`
kept in mallee.toml (config.remember)."""

from __future__ import annotations

from pathlib import Path

import pytest

from mallee.core import config
from mallee.core.errors import ConfigError

PG = "postgresql://mallee@/mallee"


def test_sqlite_files_by_default(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={})
    for service in ("clc", "walrus", "sc"):
        assert cfg.database_url_for(service) == f"sqlite:///{tmp_path.resolve() / service}.db"


def test_one_postgresql_database_gives_each_service_but_the_clc_a_schema(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={"MALLEE_DATABASE_URL": PG})
    assert cfg.database_url_for("clc") == PG
    assert cfg.database_url_for("walrus") == PG + "?options=-csearch_path%3Dwalrus"
    assert cfg.database_url_for("sc") == PG + "?options=-csearch_path%3Dsc"
    with_query = config.load(tmp_path, environ={"MALLEE_DATABASE_URL": PG + "?sslmode=require"})
    assert with_query.database_url_for("sc") == PG + "?sslmode=require&options=-csearch_path%3Dsc"


def test_a_service_url_of_its_own_wins(tmp_path: Path) -> None:
    env = {"MALLEE_DATABASE_URL": PG, "MALLEE_WALRUS_DATABASE_URL": "postgresql://w@/walrus"}
    cfg = config.load(tmp_path, environ=env)
    assert cfg.database_url_for("walrus") == "postgresql://w@/walrus"
    assert cfg.database_url_for("sc").endswith("search_path%3Dsc")


def test_a_sqlite_database_url_is_the_clcs_only(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={"MALLEE_DATABASE_URL": "sqlite:////srv/clc.db"})
    assert cfg.database_url_for("clc") == "sqlite:////srv/clc.db"
    assert cfg.database_url_for("walrus") == f"sqlite:///{tmp_path.resolve() / 'walrus'}.db"


def test_the_database_flag_is_kept_in_mallee_toml(tmp_path: Path) -> None:
    (tmp_path / "mallee.toml").write_text('region = "mallee-2"')  # no newline at its end
    config.remember(tmp_path, "database_url", PG)
    config.remember(tmp_path, "database_url", PG)  # the same again: nothing changes
    cfg = config.load(tmp_path, environ={})
    assert (cfg.database_url, cfg.region) == (PG, "mallee-2")
    assert (tmp_path / "mallee.toml").read_text().count("database_url") == 1
    with pytest.raises(ConfigError, match="already sets database_url"):
        config.remember(tmp_path, "database_url", "postgresql://other@/elsewhere")
    assert config.load(tmp_path, environ={}).database_url == PG
