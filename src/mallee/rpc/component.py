"""The ASGI app of a component that only speaks internal rpc (cc, nc, sc): its operations, a
heartbeat to the CLC while it runs, `/healthz` for supervisors and `/metrics` for Prometheus."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from mallee import __version__
from mallee.core import metrics
from mallee.core.config import Config
from mallee.core.periodic import Periodic
from mallee.rpc.cloud import Heartbeater, ServiceDescription
from mallee.rpc.contract import Handlers
from mallee.rpc.transport import (
    PREFIX,
    Client,
    Receive,
    Scope,
    Send,
    load_key,
    send_response,
    serve_rpc,
)

App = Callable[[Scope, Receive, Send], Any]
log = logging.getLogger(__name__)


def component_app(
    key: bytes,
    handlers: Handlers,
    *background: Heartbeater | Periodic,
    readings: tuple[metrics.Reading, ...] = (),
) -> App:
    """`readings`: what its metrics page reads when scraped, besides the counters."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    for task in background:
                        task.start()
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    for task in background:
                        task.stop()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        if scope["path"] == "/healthz":
            await send_response(send, 200, [("content-type", "text/plain")], b"ok\n")
        elif scope["path"].startswith(PREFIX):
            await serve_rpc(scope, receive, send, key, handlers)
        elif scope["path"] == metrics.PATH and scope["method"] == "GET":
            page = await asyncio.to_thread(metrics.render, *readings)
            await send_response(send, 200, [("content-type", metrics.CONTENT_TYPE)], page)
        else:
            await send_response(send, 404, [("content-type", "text/plain")], b"not found\n")

    return app


def reporting_app(
    cfg: Config,
    service: str,
    name: str,
    partition: str,
    detail: Callable[[], dict[str, Any]],
    handlers: Handlers | None = None,
    background: tuple[Periodic, ...] = (),
    readings: tuple[metrics.Reading, ...] = (),
) -> App:
    """A component app that heartbeats its description, with `detail()`, to the CLC; its metrics
    page says which service it is and shows `readings`."""

    def describe() -> ServiceDescription:
        return ServiceDescription(
            name=name,
            type=service,
            partition=partition,
            host=cfg.host,
            port=cfg.port(service),
            version=__version__,
            detail=detail(),
        )

    key = load_key(cfg.deployment_key_file)
    beats = Heartbeater(Client(cfg.clc_url, key), describe, cfg.heartbeat_seconds)
    info = metrics.service_info(service, __version__)
    return component_app(key, handlers or Handlers(), beats, *background, readings=(info, *readings))
