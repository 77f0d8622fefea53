"""Running the simulated nodes (simulated_nodes.py): one uvicorn server per node, all on one event
loop, stopped together on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Generator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import uvicorn
import uvloop

from mallee.core import logging as mlog
from mallee.core.config import Config
from mallee.drivers.hypervisor.base import HostResources
from mallee.services.node import app as node_app
from mallee.supervisor.simulated_nodes import SERVICE, Fleet, node_config


class NodeServer(uvicorn.Server):
    """One node's HTTP server; the fleet handles the process's signals for all of them."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def serve(cfg: Config, fleet: Fleet) -> int:
    """Run the fleet until SIGTERM or SIGINT; 3 when a node could not start (its address taken)."""
    mlog.setup(SERVICE, cfg.log_level)
    servers = []
    for index, address in enumerate(fleet.addresses()):
        node_cfg = node_config(cfg, fleet, index, address)
        options: dict[str, Any] = {
            "resources": HostResources(fleet.cores, fleet.memory_mib, fleet.disk_gib),
            "boot_delay": fleet.boot_delay,
        }
        app = node_app.create_app(node_cfg, hypervisor_options=options)
        config = uvicorn.Config(
            app,
            host=address,
            port=node_cfg.port("nc"),
            http="httptools",
            lifespan="on",
            access_log=False,
            log_config=None,
            server_header=False,
            timeout_graceful_shutdown=5,
        )
        servers.append(NodeServer(config))
    return uvloop.run(_serve_all(servers, fleet, cfg.port("nc")))


async def _serve_all(servers: list[NodeServer], fleet: Fleet, port: int) -> int:
    loop = asyncio.get_running_loop()
    # The nodes' rpc handlers run in the loop's pool: a real node has a pool of its own.
    loop.set_default_executor(ThreadPoolExecutor(max_workers=max(32, 2 * fleet.count)))

    def stop() -> None:
        for server in servers:
            server.should_exit = True

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop)

    async def run(server: NodeServer) -> bool:
        try:
            await server.serve()
        except SystemExit:  # uvicorn exits when it cannot listen on its address (logged)
            stop()
            return False
        return True

    tasks = [asyncio.create_task(run(server)) for server in servers]
    while not all(s.started for s in servers) and not any(t.done() for t in tasks):
        await asyncio.sleep(0.1)
    if all(s.started for s in servers):
        addresses = fleet.addresses()
        print(
            f"serving {fleet.count} simulated nodes: {addresses[0]} .. {addresses[-1]}, port {port} "
            f"(boot delay {fleet.boot_delay:.2f} s); register each with `mallee node register ADDRESS`",
            flush=True,
        )
    results = await asyncio.gather(*tasks)
    return 0 if all(results) else 3
