"""Driver names to factories, one function per family: services choose drivers by name from their
configuration and never import a concrete driver. Real drivers are imported only when chosen, so a
fake works on a machine without libvirt-python.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from mallee.drivers.blockstore.base import BlockStore
from mallee.drivers.hypervisor.base import Hypervisor
from mallee.drivers.network.vpc_contract import VpcNetworkDriver
from mallee.drivers.objectstore.base import ObjectStore


class UnknownDriver(LookupError):
    pass


def _libvirt_hypervisor(**options: Any) -> Hypervisor:
    from mallee.drivers.hypervisor.libvirt import LibvirtHypervisor

    return LibvirtHypervisor(**options)


def _fake_hypervisor(**options: Any) -> Hypervisor:
    from mallee.drivers.hypervisor.fake import FakeHypervisor

    return FakeHypervisor(**options)


def _filesystem_objectstore(**options: Any) -> ObjectStore:
    from mallee.drivers.objectstore.filesystem import FilesystemObjectStore

    return FilesystemObjectStore(**options)


def _file_blockstore(**options: Any) -> BlockStore:
    from mallee.drivers.blockstore.file import FileBlockStore

    return FileBlockStore(**options)


def _fake_blockstore(**options: Any) -> BlockStore:
    from mallee.drivers.blockstore.fake import FakeBlockStore

    return FakeBlockStore(**options)


def _vpc_network(**options: Any) -> VpcNetworkDriver:
    from mallee.drivers.network.vpc import VpcDriver

    return VpcDriver(**options)


def _fake_network(**options: Any) -> VpcNetworkDriver:
    from mallee.drivers.network.vpc_fake import FakeVpcDriver

    return FakeVpcDriver(**options)


HYPERVISORS: dict[str, Callable[..., Hypervisor]] = {"libvirt": _libvirt_hypervisor, "fake": _fake_hypervisor}
# The node's VPC data plane (EDGE mode's drivers were removed once it replaced them): nodes take their
# network whole from the CLC (apply_network).
NETWORKS: dict[str, Callable[..., VpcNetworkDriver]] = {"vpc": _vpc_network, "fake": _fake_network}
OBJECTSTORES: dict[str, Callable[..., ObjectStore]] = {"filesystem": _filesystem_objectstore}
BLOCKSTORES: dict[str, Callable[..., BlockStore]] = {"file": _file_blockstore, "fake": _fake_blockstore}


def prepare_host(name: str) -> None:
    """Whatever the named hypervisor driver needs from the host before it starts (for libvirt:
    its daemons running and /dev/kvm usable by the qemu user); nothing for the fake."""
    if name == "libvirt":
        from mallee.drivers.hypervisor.host import prepare

        prepare()


def hypervisor(name: str = "libvirt", **options: Any) -> Hypervisor:
    """A hypervisor driver: "libvirt" (the default everywhere a user runs Mallee) or "fake"."""
    factory: Callable[..., Hypervisor] = _pick(HYPERVISORS, "hypervisor", name)
    return factory(**options)


def network(name: str = "vpc", **options: Any) -> VpcNetworkDriver:
    """A node's VPC network driver: "vpc" (bridges, router namespaces, dnsmasq, nftables, VXLAN;
    `state_dir=`) or "fake" (in memory; with `state_dir=` its last applied state is kept on disk)."""
    factory: Callable[..., VpcNetworkDriver] = _pick(NETWORKS, "network", name)
    return factory(**options)


def objectstore(name: str = "filesystem", **options: Any) -> ObjectStore:
    """An object-store driver for Walrus: "filesystem"."""
    factory: Callable[..., ObjectStore] = _pick(OBJECTSTORES, "object store", name)
    return factory(**options)


def blockstore(name: str = "file", **options: Any) -> BlockStore:
    """A block-store driver for the Storage Controller: "file" (sparse files served over NBD by
    qemu-storage-daemon; `state_dir=`, `host=`) or "fake" (in memory; with `state_dir=` kept on disk)."""
    factory: Callable[..., BlockStore] = _pick(BLOCKSTORES, "block store", name)
    return factory(**options)


def _pick(table: dict[str, Callable[..., Any]], family: str, name: str) -> Callable[..., Any]:
    try:
        return table[name]
    except KeyError:
        choices = ", ".join(sorted(table))
        raise UnknownDriver(f"no {family} driver named {name!r}; choose one of {choices}") from None
