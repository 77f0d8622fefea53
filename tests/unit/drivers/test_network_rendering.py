"""Pure rendering of the VPC driver's dnsmasq files and command line (vpc_dhcp.py), and parsing of
dnsmasq's lease file (dnsmasq.py)."""

from __future__ import annotations

from pathlib import Path

from mallee.drivers.network import dnsmasq, vpc_dhcp
from mallee.drivers.network.vpc_contract import Interface, Subnet, Vpc

A = Interface("eni-a", "i-a", "subnet-1", "02:00:00:00:00:0a", "10.0.0.10", "tap-a", "host-a", ())
B = Interface("eni-b", "i-b", "subnet-2", "02:00:00:00:00:0b", "10.0.1.11", "tap-b", "host-b", ())
VPC = Vpc(
    "vpc-1",
    7,
    "10.0.0.0/16",
    (Subnet("subnet-2", "10.0.1.0/24"), Subnet("subnet-1", "10.0.0.0/24")),
    (A, B),
    (),
)


def test_dnsmasq_hosts_file_golden() -> None:
    assert vpc_dhcp.render_hosts([B, A]) == (
        "02:00:00:00:00:0a,10.0.0.10,host-a\n02:00:00:00:00:0b,10.0.1.11,host-b\n"
    )
    assert vpc_dhcp.render_hosts([]) == ""


def test_dnsmasq_command_is_dhcp_only() -> None:
    files = dnsmasq.DnsmasqFiles.under(Path("/state"))
    argv = vpc_dhcp.command(VPC, files)
    assert argv[:3] == ["dnsmasq", "--conf-file=/dev/null", "--port=0"]
    assert "--bind-interfaces" in argv and "--interface=vpc0" in argv
    assert "--dhcp-hostsfile=/state/dhcp-hosts" in argv and "--pid-file=/state/dnsmasq.pid" in argv
    assert "--dhcp-leasefile=/state/dhcp-leases" in argv
    # one static range per subnet (in subnet id order), each with its own gateway as router
    assert [a for a in argv if a.startswith(("--dhcp-range", "--dhcp-option"))] == [
        "--dhcp-range=set:s0,10.0.0.0,static,255.255.255.0,3600",
        "--dhcp-option=tag:s0,option:router,10.0.0.1",
        "--dhcp-range=set:s1,10.0.1.0,static,255.255.255.0,3600",
        "--dhcp-option=tag:s1,option:router,10.0.1.1",
    ]


def test_parse_leases() -> None:
    text = (
        "1700000600 02:00:00:00:00:0a 10.0.0.10 host-a 01:02:00:00:00:00:0a\n"
        "0 02:00:00:00:00:0B 10.0.0.11 * *\n"
        "duid 00:01:00:01\n"
    )
    leases = dnsmasq.parse_leases(text)
    assert [(x.mac, x.ip, x.hostname, x.expires) for x in leases] == [
        ("02:00:00:00:00:0a", "10.0.0.10", "host-a", 1700000600),
        ("02:00:00:00:00:0b", "10.0.0.11", None, 0),
    ]


def test_read_leases_of_a_missing_file_is_empty(tmp_path: Path) -> None:
    assert dnsmasq.read_leases(dnsmasq.DnsmasqFiles.under(tmp_path)) == []
    (tmp_path / "dhcp-leases").write_text("0 02:00:00:00:00:0a 10.0.0.10 host-a *\n")
    assert vpc_dhcp.leases(tmp_path) == [dnsmasq.Lease("02:00:00:00:00:0a", "10.0.0.10", "host-a", 0)]
