"""The Storage Controller process. For now it registers with the CLC (heartbeats) and answers rpc health
checks; its API grows with the issues that build it (see docs/architecture.md)."""

from __future__ import annotations

from mallee.core import config as config_mod
from mallee.core.config import Config
from mallee.rpc import component


def create_app(cfg: Config | None = None) -> component.App:
    cfg = cfg or config_mod.load()
    return component.reporting_app(cfg, "sc", f"sc-{cfg.zone}", cfg.zone, lambda: {})
