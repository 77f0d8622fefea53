"""The Cluster Controller process of one availability zone: places instances on its nodes and polls
them for what actually runs; changes are pushed up to the CLC as soon as it sees them."""

from __future__ import annotations

import logging
import threading

import msgspec

from mallee.core import config as config_mod
from mallee.core.config import Config
from mallee.core.periodic import Periodic
from mallee.rpc import cloud
from mallee.rpc import cluster as api
from mallee.rpc import node as node_rpc
from mallee.rpc.component import App, reporting_app
from mallee.rpc.contract import Handlers, Ok, StateChanged
from mallee.rpc.transport import Client, RpcError, load_key
from mallee.services.cluster.capacity_metrics import node_capacity
from mallee.services.cluster.controller import ClusterController
from mallee.services.cluster.scheduler import Overcommit

log = logging.getLogger(__name__)

POLL_SECONDS = 2.0


def create_app(cfg: Config | None = None) -> App:
    cfg = cfg or config_mod.load()
    key = load_key(cfg.deployment_key_file)
    clc = Client(cfg.clc_url, key, timeout=5)

    def push(instance_ids: list[str]) -> None:
        try:
            clc.call(cloud.INSTANCES_CHANGED, StateChanged(source=cfg.zone, instance_ids=instance_ids))
        except (OSError, RpcError) as exc:
            log.info(
                "push of %d changes to the CLC failed (its next pass sees them): %s", len(instance_ids), exc
            )

    cc = ClusterController(
        key,
        cfg.data_dir / "cc-nodes.json",
        cfg.scheduler,
        url=cfg.url("cc"),
        on_change=lambda ids: threading.Thread(target=push, args=(ids,), daemon=True).start(),
        overcommit=Overcommit(cpu=cfg.cpu_overcommit, memory=cfg.memory_overcommit),
    )
    nodes = [n.strip() for n in cfg.nodes.split(",") if n.strip()] or [f"{cfg.host}:{cfg.port('nc')}"]
    for name in nodes:
        host, _, port = name.rpartition(":")
        cc.register_node(host, int(port), configured=True)
    poller = Periodic("poll-nodes", cc.poll, POLL_SECONDS)

    def terminate(p: api.InstanceIds) -> Ok:
        cc.terminate_instances(p.instance_ids)
        return Ok()

    def stop(p: api.StopInstances) -> Ok:
        cc.stop_instances(p)
        return Ok()

    def reboot(p: api.InstanceIds) -> Ok:
        cc.reboot_instances(p.instance_ids)
        return Ok()

    def register(p: api.RegisterNode) -> Ok:
        cc.register_node(p.host, p.port)
        return Ok()

    def maintenance(p: api.NodeMaintenance) -> Ok:
        cc.set_node_maintenance(p.node, p.maintenance)
        return Ok()

    def deregister(p: api.NodeName) -> Ok:
        cc.deregister_node(p.node)
        return Ok()

    def apply_network(p: api.ApplyNetwork) -> Ok:
        cc.apply_network(p)
        return Ok()

    def attach_volume(p: node_rpc.AttachVolume) -> Ok:
        cc.attach_volume(p)
        poller.wake()  # the poll it starts pushes the node's report (the volume plugged in) to the CLC
        return Ok()

    def detach_volume(p: node_rpc.DetachVolume) -> Ok:
        cc.detach_volume(p)
        poller.wake()
        return Ok()

    def changed(_p: StateChanged) -> Ok:
        poller.wake()  # a node saw a change: poll now, and the poll pushes it on
        return Ok()

    handlers = Handlers()
    handlers.add(api.RUN_INSTANCES, cc.run_instances)
    handlers.add(api.TERMINATE_INSTANCES, terminate)
    handlers.add(api.STOP_INSTANCES, stop)
    handlers.add(api.REBOOT_INSTANCES, reboot)
    handlers.add(api.DESCRIBE, lambda _p: cc.describe())
    handlers.add(api.CONSOLE_OUTPUT, lambda p: cc.console_output(p.instance_id))
    handlers.add(api.REGISTER_NODE, register)
    handlers.add(api.SET_NODE_MAINTENANCE, maintenance)
    handlers.add(api.DEREGISTER_NODE, deregister)
    handlers.add(api.ATTACH_VOLUME, attach_volume)
    handlers.add(api.DETACH_VOLUME, detach_volume)
    handlers.add(api.APPLY_NETWORK, apply_network)
    handlers.add(api.INSTANCES_CHANGED, changed)
    return reporting_app(
        cfg,
        "cc",
        f"cc-{cfg.zone}",
        cfg.zone,
        lambda: {"nodes": msgspec.to_builtins(cc.describe().nodes)},  # free/total per node, for zones
        handlers,
        background=(poller,),
        readings=(node_capacity(cfg.zone, cc.describe),),
    )
