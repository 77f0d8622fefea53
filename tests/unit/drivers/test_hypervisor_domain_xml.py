"""Domain XML from a spec, and the spec back from it (re-adoption after a Node Controller restart)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import pytest

from mallee.drivers import registry
from mallee.drivers.hypervisor.base import (
    DiskSpec,
    InstanceSpec,
    InvalidSpec,
    NicSpec,
    Smbios,
    instance_uuid,
    validate_disk,
)
from mallee.drivers.hypervisor.domain_xml import (
    NAMESPACE,
    DomainOptions,
    domain_xml,
    metadata_xml,
    spec_from_domain,
    spec_from_metadata,
)
from mallee.drivers.hypervisor.fake import FakeHypervisor

SPEC = InstanceSpec(
    instance_id="i-0123456789abcdef0",
    vcpus=2,
    memory_mib=256,
    console_log=Path("/var/lib/mallee/instances/i-0123456789abcdef0/console.log"),
    kernel=Path("/var/lib/mallee/cache/aki-1/vmlinux"),
    ramdisk=Path("/var/lib/mallee/cache/ari-1/initrd.img"),
    cmdline="console=ttyS0 root=/dev/vda",
    disks=(
        DiskSpec("vda", Path("/var/lib/mallee/instances/i-0123456789abcdef0/root.qcow2")),
        DiskSpec(
            "vdb",
            nbd_socket=Path("/run/mallee/sc.sock"),
            nbd_export="vol-1",
            format="raw",
            serial="vol-1",
            read_only=True,
        ),
    ),
    nics=(NicSpec("d0:0d:01:02:03:04", "mallee0", "tap-i-0123"),),
)


def _parse(spec: InstanceSpec, options: DomainOptions) -> ET.Element:
    return ET.fromstring(domain_xml(spec, options))


def test_tcg_domain_gets_a_small_translation_cache_and_no_host_cpu_model() -> None:
    domain = _parse(SPEC, DomainOptions(domain_type="qemu"))

    assert domain.get("type") == "qemu"
    assert domain.findtext("features/tcg/tb-cache") == "32"
    assert domain.find("cpu") is None
    assert domain.findtext("on_crash") == "destroy"
    assert domain.find("os/type").get("machine") == "q35"  # type: ignore[union-attr]


def test_kvm_domain_uses_the_host_cpu_model_and_no_tcg_settings() -> None:
    domain = _parse(SPEC, DomainOptions(domain_type="kvm"))

    assert domain.find("cpu").get("mode") == "host-model"  # type: ignore[union-attr]
    assert domain.find("features/tcg") is None


def test_devices_follow_the_spec() -> None:
    domain = _parse(SPEC, DomainOptions(domain_type="qemu", hotplug_ports=3))

    assert domain.findtext("name") == SPEC.instance_id
    assert domain.findtext("uuid") == instance_uuid(SPEC.instance_id)
    assert domain.findtext("memory") == "256" and domain.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert domain.findtext("os/kernel") == str(SPEC.kernel)
    assert domain.findtext("os/cmdline") == SPEC.cmdline
    file_disk, nbd_disk = domain.findall("devices/disk")
    assert file_disk.find("source").get("file") == str(SPEC.disks[0].path)  # type: ignore[union-attr]
    assert nbd_disk.find("source/host").get("socket") == "/run/mallee/sc.sock"  # type: ignore[union-attr]
    assert nbd_disk.findtext("serial") == "vol-1" and nbd_disk.find("readonly") is not None
    assert domain.find("devices/interface/source").get("bridge") == "mallee0"  # type: ignore[union-attr]
    assert domain.find("devices/interface/model").get("type") == "virtio"  # type: ignore[union-attr]
    assert domain.find("devices/interface/target").get("dev") == "tap-i-0123"  # type: ignore[union-attr]
    assert domain.find("devices/serial/log").get("file") == str(SPEC.console_log)  # type: ignore[union-attr]
    ports = [c for c in domain.findall("devices/controller") if c.get("model") == "pcie-root-port"]
    assert len(ports) == 3
    assert domain.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert domain.findtext("devices/rng/backend") == "/dev/urandom"


def test_rng_can_be_left_out() -> None:
    assert _parse(SPEC, DomainOptions(rng=False)).find("devices/rng") is None


def test_the_spec_reads_back_from_the_domain_xml() -> None:
    assert spec_from_domain(domain_xml(SPEC, DomainOptions())) == SPEC


SMBIOS = Smbios(
    manufacturer="Example Cloud",
    product="m1.small",
    serial="4a1b-serial",
    bios_vendor="Example BIOS",
    board_asset_tag="i-0123456789abcdef0",
)


def _entries(domain: ET.Element, section: str) -> dict[str, str]:
    return {e.get("name", ""): e.text or "" for e in domain.findall(f"sysinfo/{section}/entry")}


def test_an_smbios_description_becomes_sysinfo_the_guest_firmware_uses() -> None:
    domain = _parse(replace(SPEC, smbios=SMBIOS), DomainOptions())

    assert domain.find("sysinfo").get("type") == "smbios"  # type: ignore[union-attr]
    assert domain.find("os/smbios").get("mode") == "sysinfo"  # type: ignore[union-attr]
    assert _entries(domain, "system") == {
        "manufacturer": "Example Cloud",
        "product": "m1.small",
        "serial": "4a1b-serial",
        "uuid": domain.findtext("uuid"),  # libvirt refuses a sysinfo uuid that is not the domain's
    }
    assert _entries(domain, "bios") == {"vendor": "Example BIOS"}  # empty values are left out
    assert _entries(domain, "baseBoard") == {"manufacturer": "Example Cloud", "asset": "i-0123456789abcdef0"}
    assert _entries(domain, "chassis") == {"manufacturer": "Example Cloud"}


def test_without_an_smbios_description_the_domain_has_no_sysinfo() -> None:
    xml = domain_xml(SPEC, DomainOptions())

    assert "sysinfo" not in xml and "smbios" not in xml  # QEMU's own tables, as before
    os_element = ET.fromstring(xml).find("os")
    assert os_element is not None
    assert [child.tag for child in os_element] == ["type", "kernel", "initrd", "cmdline"]


def test_the_smbios_description_reads_back_from_the_domain_and_its_metadata() -> None:
    spec = replace(SPEC, uuid="ec2" + SPEC.uuid[3:], smbios=SMBIOS)

    assert spec_from_domain(domain_xml(spec, DomainOptions())) == spec
    # The form given to virDomainSetMetadata (attaching a volume rewrites the metadata) keeps it too.
    stored = ET.fromstring(metadata_xml(spec))
    for node in stored.iter():  # as libvirt stores it: in the namespace it was given
        node.tag = f"{{{NAMESPACE}}}{node.tag}"
    assert spec_from_metadata(stored) == spec


def test_the_fake_hypervisor_keeps_the_smbios_description_across_a_restart(tmp_path: Path) -> None:
    state = tmp_path / "fake-host.json"
    spec = replace(SPEC, smbios=SMBIOS)
    FakeHypervisor(check_files=False, state_file=state).spawn(spec)

    assert FakeHypervisor(check_files=False, state_file=state).describe(spec.instance_id) == spec


def test_a_volume_over_nbd_tcp_is_a_network_disk_at_its_host_and_port() -> None:
    volume = DiskSpec(
        "vdc", nbd_host="10.0.0.5", nbd_port=10809, nbd_export="vol-2", format="raw", serial="vol2"
    )
    spec = replace(SPEC, disks=(*SPEC.disks, volume))
    disk = _parse(spec, DomainOptions()).findall("devices/disk")[2]
    assert disk.get("type") == "network" and disk.find("source").get("protocol") == "nbd"  # type: ignore[union-attr]
    host = disk.find("source/host")
    assert host is not None and (host.get("name"), host.get("port"), host.get("transport")) == (
        "10.0.0.5",
        "10809",
        None,
    )
    assert spec_from_domain(domain_xml(spec, DomainOptions())) == spec
    with pytest.raises(InvalidSpec, match="exactly one"):
        validate_disk(SPEC.instance_id, replace(volume, nbd_socket=Path("/run/x.sock")))
    with pytest.raises(InvalidSpec, match="port"):
        validate_disk(SPEC.instance_id, replace(volume, nbd_port=0))


def test_a_domain_without_our_metadata_is_not_ours() -> None:
    assert spec_from_domain("<domain type='kvm'><name>i-0123456789abcdef0</name></domain>") is None


def test_metadata_for_set_metadata_has_no_namespace_prefix() -> None:
    assert metadata_xml(SPEC).startswith('<instance id="i-0123456789abcdef0"')


def test_registry_selects_drivers_by_name() -> None:
    assert isinstance(registry.hypervisor("fake"), FakeHypervisor)
    with pytest.raises(registry.UnknownDriver, match="choose one of fake, libvirt"):
        registry.hypervisor("xen")


def test_registry_selects_network_drivers_by_name() -> None:
    from mallee.drivers.network.vpc_fake import FakeVpcDriver

    assert isinstance(registry.network("fake", state_dir=Path("/nonexistent")), FakeVpcDriver)
    with pytest.raises(registry.UnknownDriver, match="choose one of fake, vpc"):
        registry.network("edge")  # nodes no longer take EDGE's flat network
