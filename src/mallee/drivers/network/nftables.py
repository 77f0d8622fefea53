"""nftables rulesets of one bridge, rendered as text for one atomic `nft -f`.

Two tables per bridge, both replaced whole on every change:
- `table inet mallee_<bridge>`: the forward-hook guard (nothing from the bridge to another
  interface), stateful security groups on traffic into the bridge (matched by instance IP; br_netfilter
  makes bridged IPv4 pass this hook with iif/oif = the bridge), host protection on the input hook
  (instances reach only DHCP, the redirected metadata proxy and ping), and the 169.254.169.254:80 DNAT.
- `table bridge mallee_<bridge>_as`: stateless anti-spoofing per port: a frame from an instance's port
  must carry its MAC, and its IP (or 0.0.0.0 for DHCP) in IPv4 and ARP; anything else (IPv6 too) is
  dropped. This kernel has no `meta ibrname`, so the table cannot tell our bridge's ports from other
  bridges' ones by itself: it checks the ports it is told about, which are the registered instances'
  devices plus every other port attached to the bridge when the table is written (those get nothing
  through). A port attached later without being registered passes this table until the next write
  (setup() repairs; describe() lists it under "unregistered_ports").
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence

from mallee.drivers.network.base import METADATA_IP, GroupRule, HostNetwork, InstanceInterface, NetworkError

NFT = "nft"


def _ident(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def filter_table(bridge: str) -> str:
    return f"mallee_{_ident(bridge)}"


def antispoof_table(bridge: str) -> str:
    return f"mallee_{_ident(bridge)}_as"


def group_set(group_id: str) -> str:
    return f"g_{_ident(group_id)}"


def _set(name: str, kind: str, elements: Sequence[str]) -> list[str]:
    lines = [f"\tset {name} {{", f"\t\ttype {kind}"]
    if elements:
        lines.append(f"\t\telements = {{ {', '.join(elements)} }}")
    return [*lines, "\t}"]


def _ports(protocol: str, low: int, high: int) -> str:
    if protocol == "icmp":
        match = "meta l4proto icmp" if low == -1 else f"icmp type {low}"
        return match if high == -1 or low == -1 else f"{match} icmp code {high}"
    if low == -1 or (low, high) == (0, 65535):
        return f"meta l4proto {protocol}"
    return f"{protocol} dport {low}" if low == high else f"{protocol} dport {low}-{high}"


def render_rule(rule: GroupRule) -> str:
    parts = [f"ip daddr @{group_set(rule.group_id)}"]
    if rule.source_group is not None:
        parts.append(f"ip saddr @{group_set(rule.source_group)}")
    elif rule.cidr not in ("0.0.0.0/0", None):
        parts.append(f"ip saddr {rule.cidr}")
    if rule.protocol != "-1":
        parts.append(_ports(rule.protocol, rule.from_port, rule.to_port))
    return " ".join([*parts, "accept"])


def render_filter_table(
    host: HostNetwork, rules: Sequence[GroupRule], members: dict[str, list[str]], group_ids: Sequence[str]
) -> str:
    br = f'"{host.bridge}"'
    lines = [f"table inet {filter_table(host.bridge)} {{"]
    for group in group_ids:
        lines += _set(group_set(group), "ipv4_addr", sorted(set(members.get(group, []))))
    lines += [
        "\tchain prerouting {",
        "\t\ttype nat hook prerouting priority dstnat; policy accept;",
        f"\t\tiifname {br} ip daddr {METADATA_IP} tcp dport 80 "
        f"dnat ip to {host.metadata_host}:{host.metadata_port}",
        "\t}",
        "\tchain input {",
        "\t\ttype filter hook input priority filter; policy accept;",
        f"\t\tiifname {br} jump from_instances",
        "\t}",
        "\tchain from_instances {",
        "\t\tct state established,related accept",
        "\t\tudp sport 68 udp dport 67 accept",
        f"\t\tip daddr {host.metadata_host} tcp dport {host.metadata_port} "
        f"ct original ip daddr {METADATA_IP} accept",
        "\t\ticmp type echo-request accept",
        "\t\tcounter drop",
        "\t}",
        "\tchain forward {",
        "\t\ttype filter hook forward priority filter; policy accept;",
        f'\t\tiifname {br} oifname != {br} counter drop comment "guard: no path off the bridge"',
        f"\t\toifname {br} jump to_instances",
        "\t}",
        "\tchain to_instances {",
        "\t\tct state established,related accept",
        "\t\tct state invalid drop",
        *[f"\t\t{render_rule(r)}" for r in rules],
        "\t\tcounter drop",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def render_antispoof_table(
    host: HostNetwork, instances: Sequence[InstanceInterface], other_ports: Sequence[str] = ()
) -> str:
    """`other_ports`: ports on the bridge with no registered instance; all their frames are dropped."""
    devices = {i.device for i in instances} | set(other_ports)
    ports = [f'"{d}"' for d in sorted(devices)]
    pinned = [f'"{i.device}" . {i.mac} . {i.ip}' for i in instances]
    macs = [f'"{i.device}" . {i.mac}' for i in instances]
    lines = [f"table bridge {antispoof_table(host.bridge)} {{"]
    lines += _set("ports", "ifname", ports)
    lines += _set("pinned", "ifname . ether_addr . ipv4_addr", pinned)
    lines += _set("pinned_mac", "ifname . ether_addr", macs)
    lines += [
        "\tchain prerouting {",
        "\t\ttype filter hook prerouting priority -200; policy accept;",
        "\t\tiifname != @ports accept",
        "\t\tether type arp jump arp_from_instance",
        "\t\tether type ip jump ip_from_instance",
        "\t\tcounter drop",
        "\t}",
        "\tchain arp_from_instance {",
        "\t\tiifname . ether saddr . arp saddr ip @pinned "
        "iifname . arp saddr ether . arp saddr ip @pinned accept",
        "\t\tarp saddr ip 0.0.0.0 iifname . ether saddr @pinned_mac "
        "iifname . arp saddr ether @pinned_mac accept",
        "\t\tcounter drop",
        "\t}",
        "\tchain ip_from_instance {",
        "\t\tiifname . ether saddr . ip saddr @pinned accept",
        "\t\tip saddr 0.0.0.0 ip daddr 255.255.255.255 udp sport 68 udp dport 67 "
        "iifname . ether saddr @pinned_mac accept",
        "\t\tcounter drop",
        "\t}",
        "}",
    ]
    return "\n".join(lines) + "\n"


def replace_script(tables: Sequence[str]) -> str:
    """Wrap rendered tables so one `nft -f` creates or replaces them all in one transaction."""
    out = []
    for table in tables:
        family_and_name = table.split("{", 1)[0].strip()  # "table inet mallee_br0"
        out += [family_and_name, f"delete {family_and_name}", table]
    return "\n".join(out)


def delete_script(bridge: str) -> str:
    """Remove both tables of `bridge`; succeeds when they are missing."""
    names = [f"table inet {filter_table(bridge)}", f"table bridge {antispoof_table(bridge)}"]
    return "\n".join(line for name in names for line in (name, f"delete {name}")) + "\n"


def apply(script: str, nft: str = NFT) -> float:
    """Run `script` with one `nft -f -` (atomic); returns the seconds it took."""
    started = time.monotonic()
    done = subprocess.run([nft, "-f", "-"], input=script, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise NetworkError(f"nft failed: {done.stderr.strip()}")
    return time.monotonic() - started


def table_exists(family: str, name: str, nft: str = NFT) -> bool:
    done = subprocess.run([nft, "list", "table", family, name], capture_output=True, text=True, timeout=30)
    return done.returncode == 0
