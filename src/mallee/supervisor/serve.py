"""`mallee serve SERVICE`: run one service's ASGI app under uvicorn (uvloop + httptools)."""

from __future__ import annotations

import importlib
from typing import Any

import uvicorn

from mallee.core import logging as mlog
from mallee.core.config import Config

APP_MODULES = {
    "clc": "mallee.services.clc.app",
    "walrus": "mallee.services.walrus.app",
    "cc": "mallee.services.cluster.app",
    "sc": "mallee.services.storage.app",
    "nc": "mallee.services.node.app",
}


def build_app(service: str, cfg: Config) -> Any:
    # Loaded by name so that one process imports only the service it runs.
    module = importlib.import_module(APP_MODULES[service])
    return module.create_app(cfg)


def serve(service: str, cfg: Config) -> None:
    mlog.setup(service, cfg.log_level)
    app = build_app(service, cfg)
    uvicorn.run(
        app,
        host=cfg.host,
        port=cfg.port(service),
        loop="uvloop",
        http="httptools",
        lifespan="on",
        access_log=False,
        log_config=None,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=5,
    )
