"""The node's instance manager on the fake drivers: launch, report, guest-initiated shutdown, EBS
launches waiting for their volumes, stop, the EC2-style SMBIOS option."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import msgspec
import pytest

from mallee.drivers import registry
from mallee.drivers.hypervisor.base import instance_uuid
from mallee.drivers.hypervisor.domain_xml import DomainOptions, domain_xml
from mallee.drivers.hypervisor.fake import FakeHost, FakeHypervisor
from mallee.rpc.node import (
    AttachVolume,
    ImageSource,
    InstanceLaunch,
    InstanceType,
    LaunchImage,
    LaunchInterface,
    LaunchVolume,
    NodeInstance,
)
from mallee.rpc.storage import NbdEndpoint, VolumeExport
from mallee.services.node.imagecache import ImageCache
from mallee.services.node.instances import InstanceManager, LaunchRefused


def _launch(instance_id: str) -> InstanceLaunch:
    return InstanceLaunch(
        instance_id=instance_id,
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=InstanceType(name="m1.small", cpus=1, memory_mib=256, disk_gib=1),
        image=LaunchImage(root=ImageSource(key="emi-1", url="unused", format="raw")),
        mac="d0:0d:00:00:00:01",
        private_ip="10.111.0.2",
        hostname=instance_id,
        availability_zone="mallee-1a",
        interface=LaunchInterface(
            interface_id="eni-" + instance_id[2:], vpc_id="vpc-1", vni=7, subnet_id="subnet-1"
        ),
    )


def _manager(
    tmp_path: Path, *, ec2_smbios: bool = False, host: FakeHost | None = None
) -> tuple[InstanceManager, Any]:
    """A manager on a fake hypervisor; give `host` to restart a node on the same "machine"."""

    def fetch(source: ImageSource, target: Path) -> None:
        target.write_bytes(b"\0" * 65536)

    hypervisor = registry.hypervisor("fake") if host is None else FakeHypervisor(host)
    manager = InstanceManager(
        tmp_path / "instances",
        hypervisor,
        ImageCache(tmp_path / "cache", 10**9, fetch),
        "m0",
        lambda _interface_id: True,  # every interface is applied (see test_node_network.py)
        ec2_smbios=ec2_smbios,
    )
    return manager, hypervisor


def _state(manager: InstanceManager, instance_id: str) -> str | None:
    """The instance's state as the manager holds it, without reporting it (describe() forgets a
    stopped instance once it has reported it)."""
    with manager.lock:
        known = manager.instances.get(instance_id)
        return known.state if known is not None else None


def _wait(manager: InstanceManager, instance_id: str, state: str) -> NodeInstance:
    deadline = time.monotonic() + 10
    while True:
        report = manager.describe()
        if instance_id in report and report[instance_id].state == state:
            return report[instance_id]
        assert time.monotonic() < deadline, report
        time.sleep(0.05)


def test_an_instance_whose_guest_powers_off_is_terminated(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    manager.run(_launch("i-0123456789abcdef0"))
    _wait(manager, "i-0123456789abcdef0", "running")
    hypervisor.destroy("i-0123456789abcdef0")  # the guest went away on its own
    report = _wait(manager, "i-0123456789abcdef0", "terminated")
    assert report.reason.startswith("Client.InstanceInitiatedShutdown")
    assert not (tmp_path / "instances" / "i-0123456789abcdef0").exists()


def test_run_is_idempotent_on_the_instance_id(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    manager.run(_launch("i-0123456789abcdef1"))
    manager.run(_launch("i-0123456789abcdef1"))
    _wait(manager, "i-0123456789abcdef1", "running")
    assert hypervisor.list_instances() == ["i-0123456789abcdef1"]


def _ebs_launch(instance_id: str) -> InstanceLaunch:
    """A launch whose root is a volume, plus a second volume: the node waits for both exports."""
    volumes = [LaunchVolume(volume_id="vol-00000000000000001", target="vda")]
    volumes.append(LaunchVolume(volume_id="vol-00000000000000002", target="vdb"))
    return msgspec.structs.replace(_launch(instance_id), image=LaunchImage(), block_devices=volumes)


def _export(volume_id: str) -> VolumeExport:
    return VolumeExport(
        volume_id=volume_id, protocol="nbd", name=volume_id, endpoints=[NbdEndpoint(socket="/run/nbd.sock")]
    )


def test_an_ebs_launch_waits_for_its_volumes_and_boots_with_them(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    instance_id = "i-0123456789abcdef2"
    manager.run(_ebs_launch(instance_id))
    report = _wait(manager, instance_id, "pending")
    assert report.awaiting == ["vol-00000000000000001", "vol-00000000000000002"]
    assert report.needs.disk_gib == 0  # the root lives on the SC, not on this node's disk
    manager.attach_volume(AttachVolume(instance_id=instance_id, export=_export("vol-00000000000000001")))
    time.sleep(0.2)
    assert manager.describe()[instance_id].awaiting == ["vol-00000000000000002"]
    assert hypervisor.list_instances() == []  # not started without every volume
    manager.attach_volume(AttachVolume(instance_id=instance_id, export=_export("vol-00000000000000002")))
    report = _wait(manager, instance_id, "running")
    assert report.awaiting == [] and report.volumes == {
        "vol-00000000000000001": "vda",
        "vol-00000000000000002": "vdb",
    }


def test_a_stopped_instance_is_forgotten_and_starts_again_here(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    instance_id = "i-0123456789abcdef3"
    manager.run(_ebs_launch(instance_id))
    for volume_id in ("vol-00000000000000001", "vol-00000000000000002"):
        manager.attach_volume(AttachVolume(instance_id=instance_id, export=_export(volume_id)))
    _wait(manager, instance_id, "running")
    manager.stop(instance_id)
    deadline = time.monotonic() + 10
    # Stopped (its VM and directory gone, its state `stopped`: the directory goes a moment before
    # the state flips, and a launch while it is still `stopping` is a repeat of the running one),
    # but not yet reported: describe() would report it once and forget it.
    while hypervisor.list_instances() or _state(manager, instance_id) != "stopped":
        assert time.monotonic() < deadline, _state(manager, instance_id)
        time.sleep(0.05)
    assert not (tmp_path / "instances" / instance_id).exists()
    # Started again before the stopped instance was reported and forgotten: a new launch.
    manager.run(_ebs_launch(instance_id))
    assert _wait(manager, instance_id, "pending").awaiting == [
        "vol-00000000000000001",
        "vol-00000000000000002",
    ]


def test_an_instance_store_instance_cannot_be_stopped(tmp_path: Path) -> None:
    manager, _ = _manager(tmp_path)
    manager.run(_launch("i-0123456789abcdef4"))
    _wait(manager, "i-0123456789abcdef4", "running")
    with pytest.raises(LaunchRefused):
        manager.stop("i-0123456789abcdef4")


def test_an_ebs_instance_whose_guest_powers_off_is_stopped(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    instance_id = "i-0123456789abcdef5"
    manager.run(_ebs_launch(instance_id))
    for volume_id in ("vol-00000000000000001", "vol-00000000000000002"):
        manager.attach_volume(AttachVolume(instance_id=instance_id, export=_export(volume_id)))
    _wait(manager, instance_id, "running")
    hypervisor.destroy(instance_id)  # the guest went away on its own
    report = _wait(manager, instance_id, "stopped")
    assert report.reason.startswith("Client.InstanceInitiatedShutdown")
    assert instance_id not in manager.describe()  # reported once, then forgotten


def _cloud_init_platform(domain: ET.Element) -> str:
    """What cloud-init 22.4 makes of the guest's DMI: ds-identify's ec2_identify_platform (uuid and
    serial start with "ec2", case-insensitively, and are equal ignoring case) and
    DataSourceEc2.identify_aws (both lowered; uuid starts with "ec2" and equals the serial)."""
    system = {e.get("name"): (e.text or "") for e in domain.findall("sysinfo/system/entry")}
    uuid, serial = system.get("uuid", domain.findtext("uuid") or ""), system.get("serial", "")
    ds_identify = uuid[:3].lower() == serial[:3].lower() == "ec2" and uuid.lower() == serial.lower()
    identify_aws = uuid.lower().startswith("ec2") and uuid.lower() == serial.lower()
    assert ds_identify == identify_aws
    return "AWS" if identify_aws else "unknown"


def test_with_ec2_smbios_cloud_init_takes_the_guest_for_an_aws_instance(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path, ec2_smbios=True)
    instance_id = "i-0123456789abcdef6"
    manager.run(_launch(instance_id))
    _wait(manager, instance_id, "running")

    domain = ET.fromstring(domain_xml(hypervisor.describe(instance_id), DomainOptions()))
    system = {e.get("name"): e.text for e in domain.findall("sysinfo/system/entry")}
    assert system["uuid"] == system["serial"] == domain.findtext("uuid")  # libvirt wants the domain's
    assert system["uuid"] == "ec2" + instance_uuid(instance_id)[3:]  # still derived from the id
    assert _cloud_init_platform(domain) == "AWS"
    assert domain.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
    assert (system["manufacturer"], system["product"]) == ("Amazon EC2", "m1.small")
    assert domain.findtext("sysinfo/bios/entry[@name='vendor']") == "Amazon EC2"
    assert domain.findtext("sysinfo/baseBoard/entry[@name='asset']") == instance_id  # as on Nitro


def test_without_ec2_smbios_the_guest_keeps_qemus_firmware_tables(tmp_path: Path) -> None:
    manager, hypervisor = _manager(tmp_path)
    instance_id = "i-0123456789abcdef7"
    manager.run(_launch(instance_id))
    _wait(manager, instance_id, "running")

    spec = hypervisor.describe(instance_id)
    assert spec.smbios is None and spec.uuid == instance_uuid(instance_id)
    domain = ET.fromstring(domain_xml(spec, DomainOptions()))
    assert domain.find("sysinfo") is None and domain.find("os/smbios") is None
    assert _cloud_init_platform(domain) == "unknown"


@pytest.mark.parametrize("before", [False, True])
def test_instances_running_when_the_option_changes_are_adopted_and_managed(
    tmp_path: Path, before: bool
) -> None:
    host = FakeHost()
    manager, _ = _manager(tmp_path, ec2_smbios=before, host=host)
    instance_id = "i-0123456789abcdef8"
    manager.run(_launch(instance_id))
    _wait(manager, instance_id, "running")
    spec = host.instances[instance_id].spec

    restarted, hypervisor = _manager(tmp_path, ec2_smbios=not before, host=host)
    restarted.adopt()
    assert restarted.describe()[instance_id].state == "running"
    assert hypervisor.describe(instance_id) == spec  # it keeps the firmware it booted with
    restarted.terminate(instance_id)
    _wait(restarted, instance_id, "terminated")
    assert hypervisor.list_instances() == []
