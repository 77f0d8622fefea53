# ruff: noqa: E501 (golden nft lines are as long as nft writes them)
"""Pure rendering of the EDGE driver's nftables rulesets and dnsmasq files (golden strings); as root
with nft installed, the kernel also checks the rulesets without committing them (`nft -c`)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from mallee.drivers.network import dnsmasq, nftables
from mallee.drivers.network.base import GroupRule, HostNetwork, InstanceInterface

HOST = HostNetwork("br-z1", "10.0.0.1", 24, "10.0.0.1", 8775, lease_seconds=600)
A = InstanceInterface("i-a", "02:00:00:00:00:0a", "10.0.0.10", "host-a", "tap-a")
B = InstanceInterface("i-b", "02:00:00:00:00:0b", "10.0.0.11", "host-b", "tap-b")
RULES = [
    GroupRule("sg-1", "tcp", 22, 22, cidr="0.0.0.0/0"),
    GroupRule("sg-1", "-1", source_group="sg-1"),
    GroupRule("sg-1", "udp", 1000, 2000, cidr="192.0.2.0/24"),
    GroupRule("sg-2", "icmp", 8, 0, source_group="sg-1"),
    GroupRule("sg-2", "tcp", 0, 65535, cidr="10.0.0.0/8"),
]
FILTER = """\
table inet mallee_br_z1 {
	set g_sg_1 {
		type ipv4_addr
		elements = { 10.0.0.10, 10.0.0.11 }
	}
	set g_sg_2 {
		type ipv4_addr
	}
	chain prerouting {
		type nat hook prerouting priority dstnat; policy accept;
		iifname "br-z1" ip daddr 169.254.169.254 tcp dport 80 dnat ip to 10.0.0.1:8775
	}
	chain input {
		type filter hook input priority filter; policy accept;
		iifname "br-z1" jump from_instances
	}
	chain from_instances {
		ct state established,related accept
		udp sport 68 udp dport 67 accept
		ip daddr 10.0.0.1 tcp dport 8775 ct original ip daddr 169.254.169.254 accept
		icmp type echo-request accept
		counter drop
	}
	chain forward {
		type filter hook forward priority filter; policy accept;
		iifname "br-z1" oifname != "br-z1" counter drop comment "guard: no path off the bridge"
		oifname "br-z1" jump to_instances
	}
	chain to_instances {
		ct state established,related accept
		ct state invalid drop
		ip daddr @g_sg_1 tcp dport 22 accept
		ip daddr @g_sg_1 ip saddr @g_sg_1 accept
		ip daddr @g_sg_1 ip saddr 192.0.2.0/24 udp dport 1000-2000 accept
		ip daddr @g_sg_2 ip saddr @g_sg_1 icmp type 8 icmp code 0 accept
		ip daddr @g_sg_2 ip saddr 10.0.0.0/8 meta l4proto tcp accept
		counter drop
	}
}
"""
ANTISPOOF = """\
table bridge mallee_br_z1_as {
	set ports {
		type ifname
		elements = { "stray0", "tap-a", "tap-b" }
	}
	set pinned {
		type ifname . ether_addr . ipv4_addr
		elements = { "tap-a" . 02:00:00:00:00:0a . 10.0.0.10, "tap-b" . 02:00:00:00:00:0b . 10.0.0.11 }
	}
	set pinned_mac {
		type ifname . ether_addr
		elements = { "tap-a" . 02:00:00:00:00:0a, "tap-b" . 02:00:00:00:00:0b }
	}
	chain prerouting {
		type filter hook prerouting priority -200; policy accept;
		iifname != @ports accept
		ether type arp jump arp_from_instance
		ether type ip jump ip_from_instance
		counter drop
	}
	chain arp_from_instance {
		iifname . ether saddr . arp saddr ip @pinned iifname . arp saddr ether . arp saddr ip @pinned accept
		arp saddr ip 0.0.0.0 iifname . ether saddr @pinned_mac iifname . arp saddr ether @pinned_mac accept
		counter drop
	}
	chain ip_from_instance {
		iifname . ether saddr . ip saddr @pinned accept
		ip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 iifname . ether saddr @pinned_mac accept
		counter drop
	}
}
"""
CAN_CHECK = os.geteuid() == 0 and shutil.which("nft") is not None


def _filter() -> str:
    return nftables.render_filter_table(HOST, RULES, {"sg-1": [B.ip, A.ip, A.ip]}, ["sg-1", "sg-2"])


def test_filter_table_golden() -> None:
    assert _filter() == FILTER


def test_antispoof_table_golden() -> None:
    assert nftables.render_antispoof_table(HOST, [A, B], ["stray0", "tap-a"]) == ANTISPOOF


def test_empty_tables_have_no_elements() -> None:
    empty = nftables.render_antispoof_table(HOST, [])
    assert "elements" not in empty and "iifname != @ports accept" in empty
    assert "elements" not in nftables.render_filter_table(HOST, [], {}, [])


def test_replace_and_delete_scripts_are_idempotent_forms() -> None:
    script = nftables.replace_script([FILTER, ANTISPOOF])
    assert script.startswith(
        "table inet mallee_br_z1\ndelete table inet mallee_br_z1\ntable inet mallee_br_z1 {"
    )
    assert "table bridge mallee_br_z1_as\ndelete table bridge mallee_br_z1_as\ntable bridge" in script
    assert nftables.delete_script("br-z1") == (
        "table inet mallee_br_z1\ndelete table inet mallee_br_z1\n"
        "table bridge mallee_br_z1_as\ndelete table bridge mallee_br_z1_as\n"
    )


@pytest.mark.skipif(not CAN_CHECK, reason="nft -c needs root and nftables")
def test_the_kernel_accepts_the_rulesets() -> None:
    script = nftables.replace_script([_filter(), nftables.render_antispoof_table(HOST, [A, B], ["stray0"])])
    done = subprocess.run(["nft", "-c", "-f", "-"], input=script, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_dnsmasq_hosts_file_golden() -> None:
    assert dnsmasq.render_hosts([B, A]) == (
        "02:00:00:00:00:0a,10.0.0.10,host-a\n02:00:00:00:00:0b,10.0.0.11,host-b\n"
    )
    assert dnsmasq.render_hosts([]) == ""


def test_dnsmasq_command_is_dhcp_only() -> None:
    files = dnsmasq.DnsmasqFiles.under(Path("/state"))
    argv = dnsmasq.command(HOST, files)
    assert argv[:3] == ["dnsmasq", "--conf-file=/dev/null", "--port=0"]
    assert "--bind-interfaces" in argv and "--interface=br-z1" in argv
    assert "--dhcp-range=10.0.0.0,static,255.255.255.0,600" in argv
    assert "--dhcp-hostsfile=/state/dhcp-hosts" in argv and "--pid-file=/state/dnsmasq.pid" in argv
    assert "--dhcp-option=option:router,10.0.0.1" in argv


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


@pytest.mark.parametrize(
    "bad",
    [
        lambda: HostNetwork("a-name-much-too-long", "10.0.0.1", 24, "10.0.0.1", 80),
        lambda: HostNetwork("br0", "10.0.0.1", 33, "10.0.0.1", 80),
        lambda: InstanceInterface("i-a", "02:00:00:00:00:0A", "10.0.0.5", "h", "tap"),
        lambda: InstanceInterface("i-a", "02:00:00:00:00:0a", "10.0.0.5", "bad host", "tap"),
        lambda: InstanceInterface("i-a", "02:00:00:00:00:0a", "10.0.0.5", "h", 'tap"; flush ruleset'),
        lambda: GroupRule("sg-1", "tcp", 22, 22),
        lambda: GroupRule("sg-1", "tcp", 22, 22, cidr="0.0.0.0/0", source_group="sg-1"),
        lambda: GroupRule("sg-1", "sctp", 1, 2, cidr="0.0.0.0/0"),
        lambda: GroupRule("sg-1", "tcp", 30, 20, cidr="0.0.0.0/0"),
        lambda: GroupRule("sg 1", "tcp", 22, 22, cidr="0.0.0.0/0"),
    ],
)
def test_invalid_values_are_refused_before_rendering(bad: object) -> None:
    with pytest.raises(ValueError):
        bad()  # type: ignore[operator]
