"""Removing what a node controller set up on its host: its VMs (only those whose files live in this
node's directory), its VPC network (bridges, router namespaces, dnsmasq, nftables tables, and the
public bridge when the node made it) and its files. For `mallee down`, with the node controller
stopped."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import mallee.drivers.registry as registry
from mallee.core.config import Config
from mallee.drivers.hypervisor.base import HypervisorError

log = logging.getLogger(__name__)


def node_hypervisor_options(cfg: Config, node_dir: Path) -> dict[str, Any]:
    """How this node's hypervisor driver is made (the fake keeps its "VMs" on disk so that they
    outlive a killed node controller, as real ones do)."""
    options: dict[str, dict[str, Any]] = {
        "libvirt": {"instances_dir": node_dir / "libvirt"},
        "fake": {"state_file": node_dir / "fake-host.json"},
    }
    return options.get(cfg.hypervisor, {})


def is_ours(console_log: Path, directory: Path) -> bool:
    """Whether a domain belongs to this node: its files live in the node's directory (another cloud,
    or another node sharing the host's libvirt, keeps its own)."""
    return console_log.is_relative_to(directory)


def remove_node(cfg: Config) -> list[str]:
    """Destroy this node's VMs, tear its network down and delete its files; returns what was done."""
    node_dir = Path(cfg.node_dir)
    done: list[str] = []
    registry.prepare_host(cfg.hypervisor)
    hypervisor = registry.hypervisor(cfg.hypervisor, **node_hypervisor_options(cfg, node_dir))
    for instance_id in hypervisor.list_instances():
        spec = hypervisor.describe(instance_id)
        if spec is None or not is_ours(spec.console_log, node_dir):
            continue
        try:
            hypervisor.destroy(instance_id)
            done.append(f"destroyed VM {instance_id}")
        except HypervisorError as exc:
            log.warning("could not destroy %s: %s", instance_id, exc)
    network = registry.network(cfg.network, state_dir=node_dir / "network")
    network.teardown()
    done.append(
        f"removed the node's network ({cfg.network}: VPC bridges {cfg.vpc_prefix}v…, routers, DHCP, "
        f"firewall tables, and {cfg.public_bridge} if the node made it)"
    )
    if node_dir.exists():
        for child in node_dir.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        done.append(f"removed the node's files in {node_dir}")
    return done
