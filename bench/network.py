"""VPC data-plane benchmark (root): what security groups cost a node and its packets, with the
baselines measured in the same run.

1. propagation: from the `apply` call with a new allow rule to the first TCP connection it admits
   (a prober in the client's namespace tries every 10 ms); goal < 1 s. Then the same through the
   whole cloud (bench/_network_api.py): AuthorizeSecurityGroupIngress returned -> the first SYN
   admitted at a tiny VM's public address, and RevokeSecurityGroupIngress returned -> the first
   refused (`--no-api` skips it: it needs libvirt and boots a VM).
2. apply time for 1,000 groups x 50 rules and 500 interfaces in one VPC (the interfaces' devices do
   not exist: the driver tolerates declared taps that are not there yet): the first apply, a repeated
   one, a one-rule change and a membership change, against one `nft -f` replacing the same ruleset
   whole (what a non-incremental driver pays for every change); goal < 1 s for the first apply.
3. packets/s through a VPC bridge between two namespaces with iperf3 (Debian package): UDP with
   64-byte datagrams (a one-way UDP flow stays NEW in conntrack, so every packet is looked up in the
   groups) and TCP, with 1,000 rules in the receiver's group against none; goal >= 0.9x.

    .venv/bin/python bench/network.py [--seconds 5] [--rounds 3] [--no-api]

Everything lives on a bridge and in namespaces it creates under a random prefix, and is removed at the
end (processes by pid), also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import json
import random
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from _harness import interrupt_on_signals, machine_facts, mallee_version, print_facts, workspace
from _network_api import api_propagation

from mallee.drivers.network import vpc_nft
from mallee.drivers.network.vpc import VpcDriver
from mallee.drivers.network.vpc_contract import (
    Interface,
    NodeNetwork,
    NodeUnderlay,
    Rule,
    SecurityGroup,
    Subnet,
    Vpc,
)

ALL = "0.0.0.0/0"
LOCAL = "172.31.0.0/16"
SUBNET = Subnet("subnet-a", "172.31.0.0/18")

PROBER = r"""
import socket, sys, time
ip, port = sys.argv[1], int(sys.argv[2])
print("ready", flush=True)
while True:
    s = socket.socket()
    s.settimeout(0.01)
    try:
        s.connect((ip, port))
        print(time.monotonic(), flush=True)
        break
    except OSError:
        time.sleep(max(0.0, 0.01 - 0.001))
    finally:
        s.close()
"""

LISTENER = r"""
import socket, sys, threading
def listen(port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", port)); s.listen(64)
    while True:
        s.accept()[0].close()
for p in sys.argv[1:]:
    threading.Thread(target=listen, args=(int(p),), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


def sh(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=120)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: {done.stderr.strip()}")
    return done


class Namespaces:
    """Instances as namespaces with a veth whose host end is the declared tap; processes by pid."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.procs: list[subprocess.Popen[str]] = []

    def add(self, tap: str, mac: str, ip: str, gateway: str) -> str:
        ns = f"mlb-{secrets.token_hex(3)}"
        sh("ip", "netns", "add", ns)
        self.names.append(ns)
        sh("ip", "link", "add", tap, "type", "veth", "peer", "name", "eth0", "netns", ns)
        for cmd in (
            ["link", "set", "lo", "up"],
            ["link", "set", "eth0", "address", mac, "up"],
            ["addr", "add", f"{ip}/18", "dev", "eth0"],
            ["route", "add", "default", "via", gateway],
        ):
            sh("ip", "-n", ns, *cmd)
        sh("ip", "link", "set", tap, "up")
        return ns

    def start(self, ns: str, *argv: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            ["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[str]) -> None:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        if proc.stdout is not None:
            proc.stdout.close()

    def close(self) -> None:
        for proc in self.procs:
            self.stop(proc)
        for ns in self.names:
            sh("ip", "netns", "del", ns, check=False)


@contextlib.contextmanager
def node(prefix: str) -> Iterator[tuple[VpcDriver, NodeUnderlay, Namespaces]]:
    state = Path(tempfile.mkdtemp(prefix="mallee-bench-net-"))
    state.chmod(0o755)
    driver = VpcDriver(state)
    spaces = Namespaces()
    under = NodeUnderlay(prefix, "10.254.0.1", f"{prefix}pub", "198.51.100.0/24")
    try:
        yield driver, under, spaces
    finally:
        spaces.close()
        driver.teardown()
        shutil.rmtree(state, ignore_errors=True)


def _prefix() -> str:
    return "b" + "".join(random.choices("abcdefghijklmnopqrstuvwxyz0123456789", k=3))


def _iface(n: int, groups: tuple[str, ...], tap: str) -> Interface:
    ip = str(ipaddress.IPv4Address("172.31.0.10") + n)
    mac = "02:62:" + ":".join(f"{n >> shift & 255:02x}" for shift in (24, 16, 8, 0))
    return Interface(f"eni-{n}", f"i-{n}", SUBNET.subnet_id, mac, ip, tap, f"h{n}", groups)


def _noise(rng: random.Random, count: int) -> tuple[Rule, ...]:
    """`count` CIDR rules (tcp/udp ports and ranges) that the measured traffic never matches."""
    rules = []
    for _ in range(count):
        port = rng.randint(10000, 60000)
        cidr = f"10.{rng.randint(0, 255)}.{rng.randint(0, 255)}.0/24"
        rules.append(Rule(rng.choice(["tcp", "udp"]), port, port + rng.choice([0, 0, 0, 10]), cidr=cidr))
    return tuple(rules)


# -- 1. propagation ---------------------------------------------------------------------------------


def propagation(rounds: int) -> list[float]:
    with node(_prefix()) as (driver, under, spaces):
        client, server = _iface(0, ("sg-c",), f"{under.prefix}tc"), _iface(1, ("sg-s",), f"{under.prefix}ts")
        egress = (Rule("-1", cidr=ALL),)
        groups = {"sg-c": SecurityGroup("sg-c", (), egress, (client.private_ip,))}
        vni = random.randint(100_000, 16_000_000)

        def apply(ingress: tuple[Rule, ...]) -> None:
            groups["sg-s"] = SecurityGroup("sg-s", ingress, egress, (server.private_ip,))
            vpc = Vpc("vpc-p", vni, LOCAL, (SUBNET,), (client, server), tuple(groups.values()))
            driver.apply(NodeNetwork(under, (vpc,)))

        apply(())
        c = spaces.add(client.device, client.mac, client.private_ip, "172.31.0.1")
        s = spaces.add(server.device, server.mac, server.private_ip, "172.31.0.1")
        apply(())  # attaches the taps
        ports = [8000 + k for k in range(rounds)]
        listener = spaces.start(s, sys.executable, "-c", LISTENER, *map(str, ports))
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        delays = []
        for port in ports:
            prober = spaces.start(c, sys.executable, "-c", PROBER, server.private_ip, str(port))
            assert prober.stdout is not None and prober.stdout.readline().strip() == "ready"
            time.sleep(0.2)  # a few refused attempts first
            started = time.monotonic()
            apply((Rule("tcp", port, port, cidr=LOCAL),))
            admitted = float(prober.stdout.readline())
            delays.append(admitted - started)
            spaces.stop(prober)
            apply(())
        return delays


# -- 2. apply time ---------------------------------------------------------------------------------


def big_vpc(rng: random.Random, vni: int, prefix: str, groups: int, rules: int, interfaces: int) -> Vpc:
    gids = [f"sg-{n:05d}" for n in range(groups)]
    ifaces = [
        _iface(n, tuple(sorted(set(rng.sample(gids, rng.randint(1, 3))))), f"{prefix}q{n}")
        for n in range(interfaces)
    ]
    members: dict[str, list[str]] = {g: [] for g in gids}
    for iface in ifaces:
        for g in iface.group_ids:
            members[g].append(iface.private_ip)
    out = []
    for g in gids:
        ingress = list(_noise(rng, rules - rules // 10 - 2))
        ingress += [Rule("tcp", 443, 443, group_id=rng.choice(gids)) for _ in range(rules // 10)]
        ingress += [Rule("icmp", 8, -1, cidr=LOCAL), Rule("tcp", 22, 22, cidr=ALL)]
        out.append(SecurityGroup(g, tuple(ingress), (Rule("-1", cidr=ALL),), tuple(members[g])))
    return Vpc("vpc-big", vni, LOCAL, (SUBNET,), tuple(ifaces), tuple(out))


def apply_times(groups: int, rules: int, interfaces: int, rounds: int) -> dict[str, list[float]]:
    rng = random.Random(7)
    times: dict[str, list[float]] = {}
    with node(_prefix()) as (driver, under, _):
        vpc = big_vpc(rng, random.randint(100_000, 16_000_000), under.prefix, groups, rules, interfaces)

        def timed(label: str, state: Vpc) -> None:
            started = time.monotonic()
            driver.apply(NodeNetwork(under, (state,)))
            times.setdefault(label, []).append(time.monotonic() - started)

        timed("first apply (everything rendered)", vpc)
        first_nft = float(str(driver.describe()["last_apply"]["nft_seconds"]))
        table = vpc_nft.host_table(under.prefix, under.public_bridge, [vpc_nft.VpcOnNode(vpc, 1)])
        for _ in range(rounds):
            timed("the same state again", vpc)
            started = time.monotonic()
            vpc_nft.apply(vpc_nft.full_script(table))
            times.setdefault("baseline: nft -f replacing the ruleset", []).append(time.monotonic() - started)
            driver.apply(NodeNetwork(under, (vpc,)))  # the driver's memory matches the kernel again
        group = vpc.groups[rng.randrange(len(vpc.groups))]
        for k in range(rounds):
            more = replace(group, ingress=(*group.ingress, Rule("udp", 5000 + k, 5000 + k, cidr=LOCAL)))
            timed("one rule added", replace(vpc, groups=tuple(more if g is group else g for g in vpc.groups)))
            timed("that rule revoked", vpc)
        named = vpc.groups[0]
        left = replace(named, members=named.members[1:])
        for _ in range(rounds):
            timed("one member leaves a group", replace(vpc, groups=(left, *vpc.groups[1:])))
            timed("and comes back", vpc)
        times["(of which nft -f in the first apply)"] = [first_nft]
    return times


# -- 3. packets per second --------------------------------------------------------------------------


def throughput(seconds: float, rounds: int, noise: int) -> dict[str, list[float]]:
    rng = random.Random(11)
    results: dict[str, list[float]] = {}
    with node(_prefix()) as (driver, under, spaces):
        client, server = _iface(0, ("sg-c",), f"{under.prefix}tc"), _iface(1, ("sg-s",), f"{under.prefix}ts")
        egress = (Rule("-1", cidr=ALL),)
        allow = (Rule("tcp", 5201, 5201, cidr=LOCAL), Rule("udp", 5201, 5201, cidr=LOCAL))
        extra = _noise(rng, noise)
        vni = random.randint(100_000, 16_000_000)

        def apply(ingress: tuple[Rule, ...]) -> None:
            groups = (
                SecurityGroup("sg-c", (), egress, (client.private_ip,)),
                SecurityGroup("sg-s", ingress, egress, (server.private_ip,)),
            )
            vpc = Vpc("vpc-t", vni, LOCAL, (SUBNET,), (client, server), groups)
            driver.apply(NodeNetwork(under, (vpc,)))

        apply(allow)
        c = spaces.add(client.device, client.mac, client.private_ip, "172.31.0.1")
        s = spaces.add(server.device, server.mac, server.private_ip, "172.31.0.1")
        apply(allow)
        spaces.start(s, "iperf3", "-s", "-p", "5201")
        time.sleep(0.5)
        for _ in range(rounds):
            for label, rules in (("none", allow), (f"{noise} rules", (*extra, *allow))):
                apply(rules)
                udp = _iperf(spaces, c, server.private_ip, seconds, "-u", "-b", "0", "-l", "64")
                tcp = _iperf(spaces, c, server.private_ip, seconds)
                end = udp["end"]["sum"]
                pps = (end["packets"] - end["lost_packets"]) / end["seconds"]
                results.setdefault(f"UDP 64 B, packets/s, {label}", []).append(pps)
                bits = tcp["end"]["sum_received"]["bits_per_second"]
                results.setdefault(f"TCP, Gbit/s, {label}", []).append(bits / 1e9)
    return results


def _iperf(spaces: Namespaces, ns: str, ip: str, seconds: float, *extra: str) -> dict[str, Any]:
    argv = ["iperf3", "-c", ip, "-p", "5201", "-t", str(seconds), "-J", *extra]
    done = subprocess.run(
        ["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=seconds + 30
    )
    data = json.loads(done.stdout or "{}")
    if done.returncode != 0 or "error" in data:
        raise RuntimeError(f"iperf3 failed: {data.get('error') or done.stderr}")
    return dict(data)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="per iperf3 run (5)")
    parser.add_argument("--rounds", type=int, default=3, help="repetitions of each figure (3)")
    parser.add_argument("--groups", type=int, default=1000)
    parser.add_argument("--rules", type=int, default=50, help="per group")
    parser.add_argument("--interfaces", type=int, default=500)
    parser.add_argument("--noise", type=int, default=1000, help="rules in force for the packet rates")
    parser.add_argument("--no-api", action="store_true", help="skip propagation through the cloud (a VM)")
    args = parser.parse_args()
    if shutil.which("iperf3") is None:
        print("ERROR: iperf3 is missing (apt-get install iperf3)", file=sys.stderr)
        return 1
    interrupt_on_signals()
    versions = {"mallee": mallee_version(), "nft": sh("nft", "--version").stdout.strip()}
    print_facts(machine_facts(), versions)

    delays = propagation(args.rounds)
    print("\n1. rule propagation: apply(new allow rule) -> first admitted TCP connection (goal < 1 s)")
    print(f"   min {min(delays) * 1000:.1f} ms, median {statistics.median(delays) * 1000:.1f} ms, "
          f"max {max(delays) * 1000:.1f} ms; median/goal {statistics.median(delays):.3f}")  # fmt: skip
    if not args.no_api:
        with workspace(False) as workdir:
            through = api_propagation(args.rounds, workdir)
        print("   through the cloud, to a tiny VM's public address (TCG), from the API call's return:")
        for call, label in (("authorize", "first SYN admitted"), ("revoke", "first SYN refused")):
            values = through[call]
            print(f"   {call.capitalize()}SecurityGroupIngress -> {label}: min {min(values) * 1000:.1f} ms, "
                  f"median {statistics.median(values) * 1000:.1f} ms, max {max(values) * 1000:.1f} ms; "
                  f"median/goal {statistics.median(values):.3f}")  # fmt: skip

    times = apply_times(args.groups, args.rules, args.interfaces, args.rounds)
    base = statistics.median(times["baseline: nft -f replacing the ruleset"])
    print(
        f"\n2. node apply, {args.groups} groups x {args.rules} rules, {args.interfaces} interfaces, one VPC"
    )
    print(f"   {'':<42}{'median ms':>10}{'/ baseline':>12}")
    for label, values in times.items():
        median = statistics.median(values)
        print(f"   {label:<42}{median * 1000:>10.1f}{median / base:>12.3f}")

    rates = throughput(args.seconds, args.rounds, args.noise)
    runs = f"{args.seconds:.0f} s a run, median of {args.rounds}"
    print(f"\n3. through a VPC bridge, iperf3, {runs} (goal >= 0.9)")
    for kind in ("UDP 64 B, packets/s", "TCP, Gbit/s"):
        none = statistics.median(rates[f"{kind}, none"])
        many = statistics.median(rates[f"{kind}, {args.noise} rules"])
        print(
            f"   {kind:<22} none {none:>12,.2f}   {args.noise} rules {many:>12,.2f}   ratio {many / none:.3f}"
        )
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        raise SystemExit(main())
    raise SystemExit(130)
