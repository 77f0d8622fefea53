"""The Cluster Controller process of one availability zone: places instances on its nodes, owns
the zone's private addresses, and polls its nodes for what actually runs."""

from __future__ import annotations

from typing import Any

from mallee.core import config as config_mod
from mallee.core.config import Config
from mallee.core.periodic import Periodic
from mallee.rpc import cluster
from mallee.rpc.component import App, reporting_app
from mallee.rpc.transport import load_key
from mallee.services.cluster.controller import ClusterController

POLL_SECONDS = 2.0


def create_app(cfg: Config | None = None) -> App:
    cfg = cfg or config_mod.load()
    cc = ClusterController(
        load_key(cfg.deployment_key_file), cfg.private_subnet, cfg.data_dir / "cc-nodes.json", cfg.scheduler
    )
    nodes = [n.strip() for n in cfg.nodes.split(",") if n.strip()] or [f"{cfg.host}:{cfg.port('nc')}"]
    for name in nodes:
        host, _, port = name.rpartition(":")
        cc.register_node(host, int(port))

    def reboot(p: dict[str, Any]) -> dict[str, Any]:
        cc.reboot_instances(list(p["instance_ids"]))
        return {"ok": True}

    def register(p: dict[str, Any]) -> dict[str, Any]:
        cc.register_node(str(p["host"]), int(p["port"]))
        return {"ok": True}

    methods: dict[str, Any] = {
        cluster.RUN_INSTANCES: lambda p: cc.run_instances(list(p["instances"]), int(p.get("min_count", 1))),
        cluster.TERMINATE_INSTANCES: lambda p: {
            "terminating": cc.terminate_instances(list(p["instance_ids"]))
        },
        cluster.REBOOT_INSTANCES: reboot,
        cluster.DESCRIBE: lambda _p: cc.describe(),
        cluster.CONSOLE_OUTPUT: lambda p: cc.console_output(str(p["instance_id"])),
        cluster.REGISTER_NODE: register,
    }
    return reporting_app(
        cfg,
        "cc",
        f"cc-{cfg.zone}",
        cfg.zone,
        lambda: {"nodes": cc.describe()["nodes"]},
        methods,
        background=(Periodic("poll-nodes", cc.poll, POLL_SECONDS),),
    )
