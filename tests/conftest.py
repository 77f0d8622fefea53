"""Options of the whole test suite, and how it is shared between pytest-xdist's workers.

CI runs the suite on two workers (`--dist=loadgroup`, pyproject.toml). Each test module stays on one
worker (its module-scoped cloud is started once), and the tests with real VMs, bridges and
namespaces (tests/e2e) form one group that runs on one worker in file order, as before: they share
libvirtd (each module starts it and stops it again), and some time what a guest sees. The other
worker meanwhile runs the rest; each worker has its own session cloud. `-p no:xdist` or `-n 0` runs
everything in one process, as before.
"""

from __future__ import annotations

from pathlib import Path

import pytest

VM_GROUP = "vm"  # tests/e2e: one after another, on one worker
_E2E = Path(__file__).parent / "e2e"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-full",
        action="store_true",
        default=False,
        help="run every case of the model-driven fuzz suite (tests/functional/test_fuzz_models.py), "
        "not the sample CI runs",
    )


@pytest.hookimpl(tryfirst=True)  # before xdist's hook reads the groups
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("xdist_group"):
            continue
        path = Path(item.path)
        group = VM_GROUP if path.is_relative_to(_E2E) else str(path.relative_to(Path(__file__).parent))
        item.add_marker(pytest.mark.xdist_group(group))
