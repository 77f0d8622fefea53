"""Simulated nodes for control-plane scale work: `mallee serve nc-sim --count N` runs N real node
controller apps in one process, each on an address of its own (127.0.1.1, 127.0.1.2, … by default)
at the cloud's node port, each with its own node directory, fake host (the capacity given), fake VPC
network and heartbeat. Only the hypervisor and the data plane are simulated: a cluster controller
polls them, places on them and hears their pushes exactly as it does real nodes, so the scheduler,
the reconciler and the state push run their production code. Register each address with
`mallee node register ADDRESS --zone ZONE` (RegisterNode), as any node.

One process rather than N: a node controller is ~60 MiB of Python, and 100 of them would take
more memory than the cloud under test. The nodes share one event loop and one thread pool, so a
simulated node answers more slowly under load than a host of its own would; `--boot-delay` is how
long a VM's start takes (libvirt's define+start), during which the instance is still pending.

This module holds what they are (the options, each node's configuration; light, as every
`python -m mallee.supervisor` parses the options); simulated_serve.py runs them."""

from __future__ import annotations

import argparse
import ipaddress
from dataclasses import dataclass, replace
from pathlib import Path

from mallee.core.config import Config

SERVICE = "nc-sim"
PREFIX_DIGITS = "0123456789abcdefghijklmnopqrstuvwxyz"


@dataclass(frozen=True)
class Fleet:
    """The simulated nodes: how many, where, and what each offers."""

    count: int
    first_address: str = "127.0.1.1"
    cores: int = 64
    memory_mib: int = 262144
    disk_gib: int = 4000
    boot_delay: float = 0.25
    zone: str = ""  # the zone the nodes say they serve (empty: the configured one)
    directory: Path | None = None  # where the nodes' directories go (None: DATA_DIR/nc-sim)

    def addresses(self) -> list[str]:
        first = ipaddress.IPv4Address(self.first_address)
        return [str(first + n) for n in range(self.count)]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `serve nc-sim`."""
    group = parser.add_argument_group("simulated nodes (serve nc-sim)")
    group.add_argument("--count", type=int, default=10, help="how many nodes (10)")
    group.add_argument(
        "--first-address", default="127.0.1.1", help="the first node's address; the next ones follow it"
    )
    group.add_argument("--cores", type=int, default=64, help="cores each node offers (64)")
    group.add_argument("--memory-mib", type=int, default=262144, help="memory each node offers (256 GiB)")
    group.add_argument("--disk-gib", type=int, default=4000, help="disk each node offers (4000 GiB)")
    group.add_argument(
        "--boot-delay", type=float, default=0.25, help="seconds a VM takes to start (0.25, as libvirt)"
    )
    group.add_argument("--zone", default="", help="the zone the nodes report (default: the configured zone)")
    group.add_argument("--dir", type=Path, help="the nodes' directories (default: DATA_DIR/nc-sim)")


def fleet_of(args: argparse.Namespace) -> Fleet:
    if not 1 <= args.count <= 4096:
        raise ValueError(f"--count {args.count}: between 1 and 4096 nodes")
    if args.boot_delay < 0:
        raise ValueError("--boot-delay must not be negative")
    fleet = Fleet(
        count=args.count,
        first_address=args.first_address,
        cores=args.cores,
        memory_mib=args.memory_mib,
        disk_gib=args.disk_gib,
        boot_delay=args.boot_delay,
        zone=args.zone,
        directory=args.dir,
    )
    fleet.addresses()  # a bad address (or a range past the last one) fails here, not half-way
    return fleet


def node_config(cfg: Config, fleet: Fleet, index: int, address: str) -> Config:
    """Node `index`'s configuration: the cloud's, with its own address, directory, VPC prefix and
    capacity, and the fake drivers."""
    root = fleet.directory or cfg.data_dir / SERVICE
    return replace(
        cfg,
        host=address,
        underlay_address=address,
        zone=fleet.zone or cfg.zone,
        node_dir=str(root / address),
        vpc_prefix=_prefix(index),
        hypervisor="fake",
        network="fake",
        node_cores=fleet.cores,
        node_memory_mib=fleet.memory_mib,
        node_disk_gib=fleet.disk_gib,
    )


def _prefix(index: int) -> str:
    """A VPC prefix of its own per node ([a-z][a-z0-9]{0,3}): "s0", "s1", … "szzz"."""
    digits = ""
    while True:
        index, digit = divmod(index, len(PREFIX_DIGITS))
        digits = PREFIX_DIGITS[digit] + digits
        if index == 0:
            return "s" + digits
