"""`mallee serve SERVICE`: run one service's ASGI app under uvicorn (uvloop + httptools).

The CLC and Walrus on one host share the public endpoint's connections: the CLC's server hands S3
connections to Walrus's workers (handoff.py). Walrus runs as `walrus_workers` processes (`--worker
N`) sharing its port (SO_REUSEPORT), its database and its object store."""

from __future__ import annotations

import contextlib
import importlib
import logging
import socket
from typing import Any

import uvicorn

from mallee.core import crashpoints, metrics
from mallee.core import logging as mlog
from mallee.core.config import Config
from mallee.rpc import replay
from mallee.supervisor import door, handoff

log = logging.getLogger(__name__)

APP_MODULES = {
    "clc": "mallee.services.clc.app",
    "walrus": "mallee.services.walrus.app",
    "cc": "mallee.services.cluster.app",
    "sc": "mallee.services.storage.app",
    "nc": "mallee.services.node.app",
}


def build_app(service: str, cfg: Config, worker: int = 0) -> Any:
    # Loaded by name so that one process imports only the service it runs.
    module = importlib.import_module(APP_MODULES[service])
    return module.create_app(cfg, worker) if service == "walrus" else module.create_app(cfg)


def shared_listener(host: str, port: int) -> socket.socket:
    """A listening socket that every Walrus worker binds to the same port (SO_REUSEPORT): the
    kernel spreads new connections between them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


class Server(uvicorn.Server):
    """uvicorn's server, plus Walrus's end of the hand-off once the app has started."""

    def __init__(self, config: uvicorn.Config, receiver: handoff.HandoffReceiver | None) -> None:
        super().__init__(config)
        self.receiver = receiver

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.receiver is not None and self.started:
            self.receiver.start(self.config, self.server_state, self.lifespan.state)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        if self.receiver is not None:
            self.receiver.stop()
        await super().shutdown(sockets)


def serve(service: str, cfg: Config, worker: int = 0) -> None:
    mlog.setup(service, cfg.log_level)
    # Before anything is counted: the service's processes count into files one scrape sums.
    metrics.count_into(metrics.directory(cfg.data_dir, service))
    # Every process of the service on this host remembers the rpc nonces it accepted in one table.
    replay.keep_in(replay.file_for(cfg.data_dir, service))
    crashpoints.configure(cfg.crash_points_dir)
    app = build_app(service, cfg, worker)
    http: Any = "httptools"
    receiver = None
    sockets = None
    if service == "clc":
        sender = handoff.HandoffSender(handoff.socket_names(cfg))
        http = handoff.sending_protocol(app.for_walrus, sender, door.Door.of(cfg, "ec2"))
    elif service == "walrus":
        http = door.door_protocol(door.Door.of(cfg, "s3"))
        receiver = handoff.HandoffReceiver(handoff.socket_name(cfg, worker), door.Door.of(cfg, "s3"))
        try:
            sockets = [shared_listener(cfg.host, cfg.port(service))]
        except OSError as exc:
            log.error("cannot listen on %s:%d: %s", cfg.host, cfg.port(service), exc)
            raise SystemExit(3) from exc
    config = uvicorn.Config(
        app,
        host=cfg.host,
        port=cfg.port(service),
        loop="uvloop",
        http=http,
        lifespan="on",
        access_log=False,
        # The peer's address is the client's: uvicorn would otherwise take X-Forwarded-For from
        # loopback peers, letting a local client pass for any address (aws:SourceIp). Walrus
        # learns the address the front door saw from its signed header instead (handoff/relay).
        proxy_headers=False,
        log_config=None,
        server_header=False,
        date_header=True,
        timeout_graceful_shutdown=5,
        timeout_keep_alive=cfg.keep_alive_seconds if service in ("clc", "walrus") else 5,
    )
    server = Server(config, receiver)
    with contextlib.suppress(KeyboardInterrupt):
        server.run(sockets=sockets)
    if not server.started:
        raise SystemExit(3)  # uvicorn's exit status for a server that could not start
