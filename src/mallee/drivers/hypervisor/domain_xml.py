"""libvirt domain XML from an InstanceSpec, and the spec back from a domain's XML.

Every managed domain carries the spec in `<metadata>` under our own namespace: that marks it as ours
(other domains on the host are never touched) and lets a restarted Node Controller re-adopt it.
Choices measured in shared/notes/vm-host-facts.md: q35 with a direct (PVH) kernel boot, a pty serial
console logged to a file by virtlogd, `on_crash=destroy`, a 32 MiB TCG translation cache.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, fields
from pathlib import Path

from mallee.drivers.hypervisor.base import DiskSpec, InstanceSpec, NicSpec, Smbios

NAMESPACE = "https://mallee.dev/xmlns/libvirt/instance/1"
PREFIX = "mallee"
ET.register_namespace(PREFIX, NAMESPACE)


@dataclass(frozen=True)
class DomainOptions:
    """How this host builds domains (the same for every instance)."""

    domain_type: str = "qemu"  # "kvm" or "qemu" (TCG), from probe.choose_accelerator()
    machine: str = "q35"
    tb_cache_mib: int | None = 32  # TCG only: the default cache costs ~40 MiB more RSS per VM
    rng: bool = True  # virtio-rng from /dev/urandom: the guest stops waiting for entropy at boot
    # pcie-root-ports: libvirt puts the domain's own virtio devices (disk, NIC, rng) on the first
    # three; each hot-plugged volume takes one of the rest (q35 has no other hot-plug slots).
    hotplug_ports: int = 11
    memballoon: bool = False


def domain_xml(spec: InstanceSpec, options: DomainOptions) -> str:
    """The complete domain definition for `spec` (assumed validated)."""
    domain = ET.Element("domain", type=options.domain_type)
    _text(domain, "name", spec.instance_id)
    _text(domain, "uuid", spec.uuid)
    ET.SubElement(domain, "metadata").append(metadata_element(spec))
    _text(domain, "memory", str(spec.memory_mib), unit="MiB")
    _text(domain, "vcpu", str(spec.vcpus))
    if spec.smbios is not None:
        domain.append(_sysinfo(spec.uuid, spec.smbios))
    domain.append(_os(spec, options))
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")  # the power button: shutdown and reboot are ACPI requests
    if options.domain_type == "qemu" and options.tb_cache_mib:
        tcg = ET.SubElement(features, "tcg")
        _text(tcg, "tb-cache", str(options.tb_cache_mib), unit="MiB")
    if options.domain_type == "kvm":
        ET.SubElement(domain, "cpu", mode="host-model")
    ET.SubElement(domain, "clock", offset="utc")
    _text(domain, "on_poweroff", "destroy")
    _text(domain, "on_reboot", "restart")
    _text(domain, "on_crash", "destroy")  # a panicking guest must not reboot-loop and grow qemu
    domain.append(_devices(spec, options))
    return ET.tostring(domain, encoding="unicode")


def disk_xml(disk: DiskSpec) -> str:
    """One `<disk>` element, for the definition or for hot-plug."""
    return ET.tostring(_disk(disk), encoding="unicode")


def metadata_element(spec: InstanceSpec) -> ET.Element:
    """`<mallee:instance>`: the spec, enough to rebuild the domain and to re-adopt it."""
    root = ET.Element(_ns("instance"), id=spec.instance_id, uuid=spec.uuid)
    _text(root, _ns("vcpus"), str(spec.vcpus))
    _text(root, _ns("memory-mib"), str(spec.memory_mib))
    _text(root, _ns("console-log"), str(spec.console_log))
    if spec.kernel is not None:
        _text(root, _ns("kernel"), str(spec.kernel))
    if spec.ramdisk is not None:
        _text(root, _ns("ramdisk"), str(spec.ramdisk))
    _text(root, _ns("cmdline"), spec.cmdline)
    for disk in spec.disks:
        attributes = {"target": disk.target, "format": disk.format, "bus": disk.bus}
        attributes["read-only"] = "yes" if disk.read_only else "no"
        for name, value in (("path", disk.path), ("serial", disk.serial), ("nbd-socket", disk.nbd_socket),
                            ("nbd-export", disk.nbd_export), ("nbd-host", disk.nbd_host)):  # fmt: skip
            if value is not None:
                attributes[name] = str(value)
        if disk.nbd_host is not None:
            attributes["nbd-port"] = str(disk.nbd_port)
        ET.SubElement(root, _ns("disk"), attributes)
    for nic in spec.nics:
        nic_element = ET.SubElement(root, _ns("nic"), mac=nic.mac, bridge=nic.bridge)
        if nic.device is not None:
            nic_element.set("device", nic.device)
    if spec.smbios is not None:
        smbios = {_attribute(f.name): getattr(spec.smbios, f.name) for f in fields(Smbios)}
        ET.SubElement(root, _ns("smbios"), smbios)
    return root


def metadata_xml(spec: InstanceSpec) -> str:
    """The metadata element as text for virDomainSetMetadata, which wants it without a namespace (it
    puts the element into the namespace it is given)."""
    element = metadata_element(spec)
    for node in element.iter():
        node.tag = node.tag.removeprefix(f"{{{NAMESPACE}}}")
    return ET.tostring(element, encoding="unicode")


def spec_from_domain(xml: str) -> InstanceSpec | None:
    """The spec stored in a domain's XML, or None when the domain is not one of ours."""
    root = ET.fromstring(xml)
    found = root.find(f"metadata/{_ns('instance')}")
    return None if found is None else spec_from_metadata(found)


def spec_from_metadata(element: ET.Element) -> InstanceSpec:
    """The spec a `<mallee:instance>` element describes."""

    def text(name: str) -> str | None:
        child = element.find(_ns(name))
        return None if child is None else (child.text or "")

    def path(value: str | None) -> Path | None:
        return None if value is None else Path(value)

    disks = tuple(
        DiskSpec(
            target=disk.attrib["target"],
            path=path(disk.get("path")),
            format=disk.get("format", "qcow2"),
            read_only=disk.get("read-only") == "yes",
            serial=disk.get("serial"),
            nbd_socket=path(disk.get("nbd-socket")),
            nbd_export=disk.get("nbd-export"),
            nbd_host=disk.get("nbd-host"),
            nbd_port=int(disk.get("nbd-port", "0")),
            bus=disk.get("bus", "virtio"),
        )
        for disk in element.findall(_ns("disk"))
    )
    nics = tuple(
        NicSpec(nic.attrib["mac"], nic.attrib["bridge"], nic.get("device"))
        for nic in element.findall(_ns("nic"))
    )
    return InstanceSpec(
        instance_id=element.attrib["id"],
        uuid=element.get("uuid", ""),
        vcpus=int(text("vcpus") or 1),
        memory_mib=int(text("memory-mib") or 0),
        console_log=Path(text("console-log") or ""),
        kernel=path(text("kernel")),
        ramdisk=path(text("ramdisk")),
        cmdline=text("cmdline") or "",
        disks=disks,
        nics=nics,
        smbios=_smbios(element.find(_ns("smbios"))),
    )


def _os(spec: InstanceSpec, options: DomainOptions) -> ET.Element:
    os_element = ET.Element("os")
    _text(os_element, "type", "hvm", arch="x86_64", machine=options.machine)
    if spec.kernel is not None:
        _text(os_element, "kernel", str(spec.kernel))
        if spec.ramdisk is not None:
            _text(os_element, "initrd", str(spec.ramdisk))
        _text(os_element, "cmdline", spec.cmdline)
    else:
        ET.SubElement(os_element, "boot", dev="hd")
    if spec.smbios is not None:
        ET.SubElement(os_element, "smbios", mode="sysinfo")  # the tables from <sysinfo>, not QEMU's
    return os_element


def _sysinfo(uuid: str, smbios: Smbios) -> ET.Element:
    """`<sysinfo type='smbios'>`; empty values are left out (QEMU then writes its own or none)."""
    sections = {
        "bios": {"vendor": smbios.bios_vendor, "version": smbios.bios_version},
        "system": {
            "manufacturer": smbios.manufacturer,
            "product": smbios.product,
            "serial": smbios.serial,
            "uuid": uuid,  # libvirt refuses a sysinfo uuid that is not the domain's
        },
        "baseBoard": {"manufacturer": smbios.manufacturer, "asset": smbios.board_asset_tag},
        "chassis": {"manufacturer": smbios.manufacturer, "asset": smbios.chassis_asset_tag},
    }
    sysinfo = ET.Element("sysinfo", type="smbios")
    for section, entries in sections.items():
        present = {name: value for name, value in entries.items() if value}
        if present:
            element = ET.SubElement(sysinfo, section)
            for name, value in present.items():
                _text(element, "entry", value, name=name)
    return sysinfo


def _smbios(element: ET.Element | None) -> Smbios | None:
    """The SMBIOS description `metadata_element` keeps, one attribute per field."""
    if element is None:
        return None
    return Smbios(**{f.name: element.get(_attribute(f.name), "") for f in fields(Smbios)})


def _devices(spec: InstanceSpec, options: DomainOptions) -> ET.Element:
    devices = ET.Element("devices")
    for disk in spec.disks:
        devices.append(_disk(disk))
    for nic in spec.nics:
        interface = ET.SubElement(devices, "interface", type="bridge")
        ET.SubElement(interface, "mac", address=nic.mac)
        ET.SubElement(interface, "source", bridge=nic.bridge)
        if nic.device is not None:
            ET.SubElement(interface, "target", dev=nic.device)
        ET.SubElement(interface, "model", type="virtio")
    # pty + virtlogd: the log survives destroy and an interactive console stays possible.
    serial = ET.SubElement(devices, "serial", type="pty")
    ET.SubElement(serial, "log", file=str(spec.console_log), append="off")
    ET.SubElement(serial, "target", port="0")
    console = ET.SubElement(devices, "console", type="pty")
    ET.SubElement(console, "target", type="serial", port="0")
    ET.SubElement(devices, "controller", type="usb", model="none")
    if options.machine == "q35":  # libvirt numbers the ports only when the root is given first
        ET.SubElement(devices, "controller", type="pci", index="0", model="pcie-root")
    for _ in range(options.hotplug_ports):
        ET.SubElement(devices, "controller", type="pci", model="pcie-root-port")
    ET.SubElement(devices, "memballoon", model="virtio" if options.memballoon else "none")
    if options.rng:
        rng = ET.SubElement(devices, "rng", model="virtio")
        _text(rng, "backend", "/dev/urandom", model="random")
    return devices


def _disk(disk: DiskSpec) -> ET.Element:
    if disk.nbd_socket is not None or disk.nbd_host is not None:
        element = ET.Element("disk", type="network", device="disk")
        ET.SubElement(element, "driver", name="qemu", type="raw")
        source = ET.SubElement(element, "source", protocol="nbd", name=disk.nbd_export or "")
        if disk.nbd_socket is not None:
            ET.SubElement(source, "host", transport="unix", socket=str(disk.nbd_socket))
        else:
            ET.SubElement(source, "host", name=str(disk.nbd_host), port=str(disk.nbd_port))
    else:
        element = ET.Element("disk", type="file", device="disk")
        ET.SubElement(element, "driver", name="qemu", type=disk.format)
        ET.SubElement(element, "source", file=str(disk.path))
    ET.SubElement(element, "target", dev=disk.target, bus=disk.bus)
    if disk.serial:
        _text(element, "serial", disk.serial)
    if disk.read_only:
        ET.SubElement(element, "readonly")
    return element


def _text(parent: ET.Element, tag: str, text: str, **attributes: str) -> ET.Element:
    element = ET.SubElement(parent, tag, attributes)
    element.text = text
    return element


def _ns(tag: str) -> str:
    return f"{{{NAMESPACE}}}{tag}"


def _attribute(field_name: str) -> str:
    return field_name.replace("_", "-")
