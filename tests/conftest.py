"""Options of the whole test suite, and how it is shared between pytest-xdist's workers.

CI runs the suite on two workers (pyproject.toml; `pytest_xdist_make_scheduler` below says what
goes where). Each test module stays on one worker (its module-scoped cloud is started once), and the
tests with real VMs, bridges and namespaces (tests/e2e) form one group that runs on one worker in
file order, as before: they share libvirtd (each module starts it and stops it again), and some
time what a guest sees. The other worker meanwhile runs the rest; each worker has its own session
cloud. `-n 0` runs everything in one process, as before.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

VM_GROUP = "vm"  # tests/e2e: one after another, on one worker
E2E_PREFIX = "tests/e2e/"  # how their node ids start (relative to the repository)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-full",
        action="store_true",
        default=False,
        help="run every case of the model-driven fuzz suite (tests/functional/test_fuzz_models.py), "
        "not the sample CI runs",
    )


@pytest.hookimpl(optionalhook=True)  # a pytest-xdist hook: the controller's scheduler
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    # (xdist's own --dist=loadgroup marks nodeids in a way pytest 9 no longer reads, so the
    # grouping is done here, by scope, as --dist=loadfile does by file.)
    from xdist.scheduler import LoadScopeScheduling

    class ByModuleAndVm(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            path = nodeid.split("::", 1)[0]
            return VM_GROUP if path.startswith(E2E_PREFIX) else path

    return ByModuleAndVm(config, log)


@pytest.fixture
def short_tmp_path() -> Iterator[Path]:
    """A new directory with a short path, for tests that put unix sockets in it (at most 107
    bytes; pytest's tmp_path under a worker's popen-gwN/ directory can be too long), removed after."""
    path = Path(tempfile.mkdtemp(prefix="mt-", dir="/tmp"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
