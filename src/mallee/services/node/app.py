"""The Node Controller process: runs this host's instances through the hypervisor driver, applies
the VPC network the CLC pushes (apply_network) through the network driver, caches images, and
serves the metadata service to its guests in each VPC."""

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
from mallee.core.files import reachable_dir
from mallee.drivers.hypervisor.base import HypervisorError
from mallee.drivers.network.vpc_contract import NodeUnderlay, VpcNetworkDriver, VpcNetworkError
from mallee.rpc import cluster, node
from mallee.rpc.component import App, reporting_app
from mallee.rpc.contract import Handlers, Ok, StateChanged
from mallee.rpc.transport import Client, Receive, RpcError, Scope, Send, load_key
from mallee.services.node import volumes
from mallee.services.node.imagecache import ImageCache
from mallee.services.node.instances import InstanceManager, LaunchRefused
from mallee.services.node.metadata_proxy import MetadataProxy
from mallee.services.node.network import NodeNetworkManager
from mallee.services.node.teardown import node_hypervisor_options

log = logging.getLogger(__name__)

GIB = 1024**3
METADATA_PORT = 80
NETWORK_FILE = "node-network.json"  # the last network pushed, kept before it is applied


def node_underlay(cfg: Config) -> NodeUnderlay:
    """This node as the VPC driver sees it (config: vpc_prefix, underlay_address, public_*)."""
    return NodeUnderlay(
        prefix=cfg.vpc_prefix,
        address=cfg.underlay_address or cfg.host,
        public_bridge=cfg.public_bridge,
        public_cidr=cfg.public_cidr,
        public_gateway=cfg.public_gateway or None,
        vxlan_port=cfg.vxlan_port,
    )


def public_host_address(cfg: Config) -> str:
    """The host's own address on a public bridge the node made: the range's first host address."""
    public = ipaddress.IPv4Network(cfg.public_cidr)
    return f"{next(public.hosts())}/{public.prefixlen}"


def start_network(cfg: Config, driver: VpcNetworkDriver, network: NodeNetworkManager) -> None:
    """At start, before instances are re-adopted: the public bridge and the host's address on it
    (when the bridge is the node's own), then the network kept on disk, applied again."""
    try:
        if driver.prepare_public_bridge(cfg.public_bridge, public_host_address(cfg)):
            log.info(
                "public network %s on %s (the host is %s)",
                cfg.public_cidr,
                cfg.public_bridge,
                public_host_address(cfg),
            )
        else:
            log.info("public network %s on the existing bridge %s", cfg.public_cidr, cfg.public_bridge)
    except VpcNetworkError as exc:
        log.warning("could not prepare the public bridge %s: %s", cfg.public_bridge, exc)
    network.restore()


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


def create_app(cfg: Config | None = None, hypervisor_options: dict[str, Any] | None = None) -> App:
    """`hypervisor_options`: more for the hypervisor driver (a simulated node's fake host: its
    `resources` and `boot_delay`; supervisor/simulated_nodes.py)."""
    cfg = cfg or config_mod.load()
    key = load_key(cfg.deployment_key_file)
    node_dir = reachable_dir(Path(cfg.node_dir))
    registry.prepare_host(cfg.hypervisor)
    options = {**node_hypervisor_options(cfg, node_dir), **(hypervisor_options or {})}
    hypervisor = registry.hypervisor(cfg.hypervisor, **options)
    driver = registry.network(cfg.network, state_dir=node_dir / "network")
    pusher = ChangePusher(key)
    proxy = MetadataProxy(key, Client(cfg.clc_url, key))

    def applied(_network: node.NodeNetwork) -> None:
        manager.network_applied()  # launches waiting for their interface go on
        try:
            proxy.follow(network.vpc_ids(), lambda vpc_id: driver.metadata_listener(vpc_id, METADATA_PORT))
        except (RuntimeError, TimeoutError) as exc:  # the loop is gone (stopping): nothing to serve
            log.warning("the metadata service did not follow the network: %s", exc)

    network = NodeNetworkManager(driver, node_underlay(cfg), node_dir / NETWORK_FILE, on_applied=applied)
    manager = InstanceManager(
        node_dir / "instances",
        hypervisor,
        # Bundles are decrypted with the cloud's key: here in the all-in-one; a node on its own host
        # needs a copy of cloud-pk.pem in its data directory (read when a bundle is first launched).
        ImageCache(node_dir / "cache", cfg.image_cache_gib * GIB, cloud_key=cfg.data_dir / "cloud-pk.pem"),
        cfg.vpc_prefix,
        network.interface_applied,
        on_change=pusher.changed,
        ec2_smbios=cfg.ec2_smbios,
    )
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
            network_generation=network.generation,
            underlay=cfg.underlay,
        )

    def run(p: node.RunInstance) -> Ok:
        try:
            manager.run(p.launch)
        except LaunchRefused as exc:
            raise RpcError(400, "InvalidLaunch", str(exc)) from exc
        return Ok()

    def apply_network(p: node.NodeNetwork) -> Ok:
        try:
            network.apply(p)
        except ValueError as exc:
            raise RpcError(400, "InvalidNetwork", f"generation {p.generation}: {exc}") from exc
        except VpcNetworkError as exc:  # kept on disk: applied again at the next push or start
            log.warning("network generation %d did not apply: %s", p.generation, exc)
            raise RpcError(500, "NetworkNotApplied", f"generation {p.generation}: {exc}") from exc
        return Ok()

    def attach_volume(p: node.AttachVolume) -> Ok:
        try:
            manager.attach_volume(p)
        except volumes.VolumeRefused as exc:
            raise RpcError(409, "VolumeRefused", str(exc)) from exc
        except HypervisorError as exc:
            raise RpcError(500, "AttachFailed", f"{p.export.volume_id} to {p.instance_id}: {exc}") from exc
        return Ok()

    def detach_volume(p: node.DetachVolume) -> Ok:
        try:
            manager.detach_volume(p)
        except HypervisorError as exc:
            raise RpcError(500, "DetachFailed", f"{p.volume_id} from {p.instance_id}: {exc}") from exc
        return Ok()

    def terminate(p: node.InstanceRef) -> Ok:
        manager.terminate(p.instance_id)
        return Ok()

    def stop(p: node.StopInstance) -> Ok:
        try:
            manager.stop(p.instance_id, p.force)
        except LaunchRefused as exc:
            raise RpcError(409, "StopRefused", str(exc)) from exc
        return Ok()

    def reboot(p: node.InstanceRef) -> Ok:
        manager.reboot(p.instance_id)
        return Ok()

    handlers = Handlers()
    handlers.add(node.RUN_INSTANCE, run)
    handlers.add(node.TERMINATE_INSTANCE, terminate)
    handlers.add(node.STOP_INSTANCE, stop)
    handlers.add(node.REBOOT_INSTANCE, reboot)
    handlers.add(node.DESCRIBE, describe)
    handlers.add(node.APPLY_NETWORK, apply_network)
    handlers.add(node.ATTACH_VOLUME, attach_volume)
    handlers.add(node.DETACH_VOLUME, detach_volume)
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
                proxy.bind(loop)
                await loop.run_in_executor(None, start_network, cfg, driver, network)
                await loop.run_in_executor(None, manager.adopt)
            elif message["type"] == "lifespan.shutdown":
                await proxy.stop()
            return message

        await inner(scope, wrapped_receive, send)

    return app
