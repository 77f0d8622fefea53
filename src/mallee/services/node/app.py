"""The Node Controller process: runs this host's instances through the hypervisor driver, wires
them into the zone's network, caches images, and serves the metadata service to its guests."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from pathlib import Path
from typing import Any

import mallee.drivers.registry as registry
from mallee.core import config as config_mod
from mallee.core.config import Config
from mallee.drivers.network.base import HostNetwork
from mallee.rpc import cluster, node
from mallee.rpc.component import App, reporting_app
from mallee.rpc.contract import Handlers, Ok, StateChanged
from mallee.rpc.transport import Client, Receive, RpcError, Scope, Send, load_key
from mallee.services.node.imagecache import ImageCache
from mallee.services.node.instances import InstanceManager
from mallee.services.node.metadata_proxy import MetadataProxy
from mallee.services.node.teardown import node_hypervisor_options

log = logging.getLogger(__name__)

GIB = 1024**3


def reachable_dir(path: Path) -> Path:
    """Create `path` so the hypervisor's unprivileged user can traverse to the files in it (0711)."""
    missing = [p for p in [path, *path.parents] if not p.exists()]
    path.mkdir(parents=True, exist_ok=True)
    for created in missing:
        created.chmod(0o711)
    return path


def host_network(cfg: Config) -> HostNetwork:
    subnet = ipaddress.ip_network(cfg.private_subnet)
    gateway = str(next(subnet.hosts()))
    # Guests reach the metadata proxy on the bridge address; with the fake network there is no
    # bridge, so it listens where the node's rpc does.
    return HostNetwork(
        bridge=cfg.bridge,
        address=gateway,
        prefix=subnet.prefixlen,
        metadata_host=gateway if cfg.network != "fake" else cfg.host,
        metadata_port=cfg.port("metadata"),
    )


class ChangePusher:
    """Tells the node's cluster controller (the last one that polled it) that an instance changed
    state, from a thread of its own so that no launch or terminate waits for the CC. A push that
    fails is dropped: the CC's next poll sees the change anyway."""

    def __init__(self, key: bytes) -> None:
        self.key = key
        self.target = ""  # the CC's rpc url, learnt from its polls
        self.source = ""

    def changed(self, instance_id: str) -> None:
        if self.target:
            threading.Thread(target=self._push, args=(self.target, instance_id), daemon=True).start()

    def _push(self, target: str, instance_id: str) -> None:
        try:
            Client(target, self.key, timeout=5).call(
                cluster.INSTANCES_CHANGED, StateChanged(source=self.source, instance_ids=[instance_id])
            )
        except (OSError, RpcError) as exc:
            log.info("push of %s's change to %s failed (the next poll sees it): %s", instance_id, target, exc)


def create_app(cfg: Config | None = None) -> App:
    cfg = cfg or config_mod.load()
    key = load_key(cfg.deployment_key_file)
    node_dir = reachable_dir(Path(cfg.node_dir))
    registry.prepare_host(cfg.hypervisor)
    hypervisor = registry.hypervisor(cfg.hypervisor, **node_hypervisor_options(cfg, node_dir))
    network = registry.network(cfg.network, state_dir=node_dir / "network")
    pusher = ChangePusher(key)
    manager = InstanceManager(
        node_dir / "instances",
        hypervisor,
        network,
        # Bundles are decrypted with the cloud's key: here in the all-in-one; a node on its own host
        # needs a copy of cloud-pk.pem in its data directory (read when a bundle is first launched).
        ImageCache(node_dir / "cache", cfg.image_cache_gib * GIB, cloud_key=cfg.data_dir / "cloud-pk.pem"),
        cfg.bridge,
        on_change=pusher.changed,
    )
    proxy = MetadataProxy(key, Client(cfg.clc_url, key))
    hostnet = host_network(cfg)
    me = f"{cfg.host}:{cfg.port('nc')}"

    def describe(p: node.DescribeNode) -> node.NodeReport:
        if p.cluster_url:
            pusher.target = p.cluster_url
        measured = hypervisor.host_resources()
        resources = node.Resources(
            cores=cfg.node_cores or measured.cores,
            memory_mib=cfg.node_memory_mib or measured.memory_mib,
            disk_gib=cfg.node_disk_gib or measured.disk_gib,
        )
        return node.NodeReport(
            instances=manager.describe(),
            resources=resources,
            hypervisor=str(hypervisor.capabilities.get("accelerator", cfg.hypervisor)),
        )

    def run(p: node.RunInstance) -> Ok:
        manager.run(p.launch)
        return Ok()

    def terminate(p: node.InstanceRef) -> Ok:
        manager.terminate(p.instance_id)
        return Ok()

    def reboot(p: node.InstanceRef) -> Ok:
        manager.reboot(p.instance_id)
        return Ok()

    handlers = Handlers()
    handlers.add(node.RUN_INSTANCE, run)
    handlers.add(node.TERMINATE_INSTANCE, terminate)
    handlers.add(node.REBOOT_INSTANCE, reboot)
    handlers.add(node.DESCRIBE, describe)
    handlers.add(
        node.CONSOLE_OUTPUT, lambda p: node.ConsoleOutput(output=manager.console_output(p.instance_id))
    )
    pusher.source = me
    inner = reporting_app(
        cfg,
        "nc",
        f"nc-{cfg.host}",
        cfg.zone,
        lambda: {
            "hypervisor": str(hypervisor.capabilities.get("accelerator", cfg.hypervisor)),
            "reason": str(hypervisor.capabilities.get("accelerator_reason", "")),
            "network": cfg.network,
        },
        handlers,
    )

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "lifespan":
            await inner(scope, receive, send)
            return

        async def wrapped_receive() -> dict[str, Any]:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                await loop.run_in_executor(None, network.setup, hostnet)
                await loop.run_in_executor(None, manager.adopt)
                await proxy.start(hostnet.metadata_host, hostnet.metadata_port)
                log.info("metadata service on %s:%d", hostnet.metadata_host, hostnet.metadata_port)
            elif message["type"] == "lifespan.shutdown":
                await proxy.stop()
            return message

        await inner(scope, wrapped_receive, send)

    return app
