"""The log policy: quiet by default (a process's own lines and warnings), details with --verbose."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from mallee.core import logging as mlog


@pytest.fixture(autouse=True)
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    own = logging.getLogger("mallee.up")
    own_level = own.level
    try:
        yield
    finally:
        root.handlers[:], root.level = handlers, level
        own.setLevel(own_level)


def _say_everything() -> None:
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    logging.getLogger("mallee.services.node.instances").info("re-adopted i-1")
    logging.getLogger("mallee.up").info("started cc (pid 7)")
    logging.getLogger("mallee.services.cluster.controller").warning("node n1 stopped answering")


def test_by_default_only_the_processes_own_lines_and_warnings_are_logged(
    capsys: pytest.CaptureFixture[str],
) -> None:
    mlog.setup("up", "WARNING")
    _say_everything()
    logged = capsys.readouterr().err
    assert "started cc (pid 7)" in logged and "node n1 stopped answering" in logged
    assert "Context impl" not in logged and "re-adopted" not in logged


def test_verbose_logs_the_detail(capsys: pytest.CaptureFixture[str]) -> None:
    mlog.setup("up", mlog.verbose("WARNING"))
    _say_everything()
    logged = capsys.readouterr().err
    assert "Context impl" in logged and "re-adopted i-1" in logged and "started cc" in logged


def test_verbose_never_says_less_than_asked() -> None:
    assert mlog.verbose("WARNING") == "INFO"
    assert mlog.verbose("error") == "INFO"
    assert mlog.verbose("DEBUG") == "DEBUG"
