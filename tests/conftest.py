"""Options of the whole test suite."""

from __future__ import annotations

import pytest


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        "--fuzz-full",
        action="store_true",
        default=False,
        help="run every case of the model-driven fuzz suite (tests/functional/test_fuzz_models.py), "
        "not the sample CI runs",
    )
