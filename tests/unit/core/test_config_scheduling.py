"""The placement settings: the policy and the overcommit ratios, with their defaults, read from
mallee.toml and MALLEE_* variables, and refused at load when no scheduler could use them."""

from __future__ import annotations

from pathlib import Path

import pytest

from mallee.core import config
from mallee.core.errors import ConfigError


def test_by_default_a_core_offers_four_vcpus_and_memory_is_not_overcommitted(tmp_path: Path) -> None:
    cfg = config.load(tmp_path, environ={})
    assert (cfg.scheduler, cfg.cpu_overcommit, cfg.memory_overcommit) == ("ROUNDROBIN", 4.0, 1.0)


def test_ratios_come_from_mallee_toml_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "mallee.toml").write_text(
        'cpu_overcommit = 2\nmemory_overcommit = 1.5\nscheduler = "GREEDY"\n'
    )
    cfg = config.load(tmp_path, environ={"MALLEE_CPU_OVERCOMMIT": "8.0"})
    assert (cfg.scheduler, cfg.cpu_overcommit, cfg.memory_overcommit) == ("GREEDY", 8.0, 1.5)


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf", "four"])
@pytest.mark.parametrize("setting", ["cpu_overcommit", "memory_overcommit"])
def test_a_ratio_that_is_not_above_zero_is_refused_naming_the_setting(
    tmp_path: Path, setting: str, value: str
) -> None:
    with pytest.raises(ConfigError, match=setting):
        config.load(tmp_path, environ={f"MALLEE_{setting.upper()}": value})


def test_an_unknown_placement_policy_is_refused_with_the_ones_there_are(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="scheduler.*ROUNDROBIN.*GREEDY"):
        config.load(tmp_path, environ={"MALLEE_SCHEDULER": "BEST"})
