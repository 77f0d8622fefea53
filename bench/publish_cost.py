"""What the control plane's per-pass work costs at scale, in process, against the code of another
tree in the same run: the CLC's publication of every node's network (`network_state.Publisher`),
the CC's absorption of one poll of its nodes (`ClusterController._absorb`), and a simulated node's
check of a pushed network (`vpc_model.validate`).

A synthetic CLC database (SQLite, migrated) holds one VPC of N instances spread evenly over the
nodes, each with its interface in the VPC's default group (whose rule names the group itself, as on
AWS, so every node's document lists every member). The zone is a stand-in that encodes each message
as the transport would (the figure includes encoding) and records the generation as applied. The
CC is a real ClusterController whose nodes' reports are made here (no rpc).

    .venv/bin/python bench/publish_cost.py [--levels 1000,10000] [--nodes 100] [--repeats 3]
                                           [--base /tmp/scale-base]

`--base DIR`: the "before" is DIR's `network_state.py`, `controller.py` and `vpc_model.py`, loaded
beside this tree's (make DIR with `git worktree add /tmp/scale-base <rev>`); without it, only this
tree is measured. For each level it prints, before and after, the CPU time of this process (one
thread; median of `--repeats`) of: a first pass (a new Publisher: every node is sent its network), a
pass where nothing changed, a pass after a launch of one instance per node (every node's document
changes), with the share spent encoding the messages (the transport's, paid by both) and the
documents and bytes sent; one CC poll's absorption (every node reports all its instances running)
and the validation of one node's network. It checks that both trees make the same documents.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import importlib.util
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

from sqlalchemy import insert

from mallee.db import migrate
from mallee.db.session import Database
from mallee.drivers.network import vpc_contract as vpc
from mallee.drivers.network import vpc_model
from mallee.rpc import cluster, node
from mallee.rpc.contract import Ok, encode
from mallee.services.clc import network_state
from mallee.services.clc.network_tables import NetworkInterface, SecurityGroup, SecurityGroupRule, Subnet, Vpc
from mallee.services.clc.tables import Account, Instance
from mallee.services.cluster import controller
from mallee.services.node.network import driver_state

ACCOUNT = "123456789012"
NOW = _dt.datetime(2026, 12, 8, tzinfo=_dt.UTC)
UNDERLAY = vpc.NodeUnderlay(
    prefix="m0", address="10.0.1.1", public_bridge="mpub0", public_cidr="198.51.100.0/24"
)


def _node(i: int) -> str:
    return f"10.0.1.{i + 1}:8775"


def _underlay(i: int) -> str:
    return f"10.0.1.{i + 1}:4789"


# -- the CLC's database -----------------------------------------------------------------------------


def make_database(path: Path) -> Database:
    db = Database(f"sqlite:///{path}")
    migrate.upgrade(db.engine, "clc")
    with db.session() as s:
        s.add(Account(id=ACCOUNT, name="bench", created=NOW))
        s.flush()
        s.add(Vpc(id="vpc-bench", account_id=ACCOUNT, cidr="10.0.0.0/16", vni=7, created=NOW))
        s.flush()
        s.add(Subnet(id="subnet-bench", account_id=ACCOUNT, vpc_id="vpc-bench", zone="z", cidr="10.0.0.0/17"))
        s.add(
            SecurityGroup(
                id="sg-default", account_id=ACCOUNT, vpc_id="vpc-bench", name="default", description="d"
            )
        )
        s.flush()
        s.add(  # the default group's own rules, as on AWS: all traffic from its members, all out
            SecurityGroupRule(
                id="sgr-in",
                group_id="sg-default",
                is_egress=False,
                protocol="-1",
                from_port=-1,
                to_port=-1,
                referenced_group_id="sg-default",
            )
        )
        s.add(
            SecurityGroupRule(
                id="sgr-out",
                group_id="sg-default",
                is_egress=True,
                protocol="-1",
                from_port=-1,
                to_port=-1,
                cidr="0.0.0.0/0",
            )
        )
    return db


def add_instances(db: Database, first: int, count: int, nodes: int) -> None:
    """Instances first..first+count-1, running, the n-th on node n % nodes, each with its interface."""
    instances, interfaces = [], []
    for n in range(first, first + count):
        iid, ip, mac = (
            f"i-{n:017x}",
            f"10.0.{n // 250}.{n % 250 + 4}",
            f"d0:0d:00:{n >> 16 & 255:02x}:{n >> 8 & 255:02x}:{n & 255:02x}",
        )
        instances.append(
            dict(
                id=iid,
                reservation_id=f"r-{n // 500:017x}",
                account_id=ACCOUNT,
                image_id="ami-1",
                instance_type="t1.micro",
                zone="z",
                state="running",
                desired="running",
                node=_node(n % nodes),
                private_ip=ip,
                mac=mac,
                launch_time=NOW,
                vpc_id="vpc-bench",
                subnet_id="subnet-bench",
            )
        )
        interfaces.append(
            dict(
                id=f"eni-{n:017x}",
                account_id=ACCOUNT,
                vpc_id="vpc-bench",
                subnet_id="subnet-bench",
                instance_id=iid,
                mac=mac,
                private_ip=ip,
                group_ids=json.dumps(["sg-default"]),
            )
        )
    with db.session() as s:
        s.execute(insert(Instance), instances)
        s.execute(insert(NetworkInterface), interfaces)


class Zone:
    """The zone's CC as the publisher sees it: encodes what it is sent, as the transport would, and
    counts it; every node applies what it gets at once."""

    def __init__(self, nodes: int) -> None:
        self.nodes = nodes
        self.applied: dict[str, int] = {}
        self.sent = 0
        self.bytes = 0
        self.encoding_ms = 0.0  # CPU spent encoding what was sent (the transport's share)

    def reset(self) -> None:
        self.sent, self.bytes, self.encoding_ms = 0, 0, 0.0

    def call(self, operation: Any, request: Any) -> Any:
        assert operation is cluster.APPLY_NETWORK
        started = time.process_time()
        self.bytes += len(encode(request))
        self.encoding_ms += 1000 * (time.process_time() - started)
        self.sent += 1
        self.applied[request.node] = request.network.generation
        return Ok()

    def report(self) -> cluster.ClusterReport:
        none = node.Resources()
        return cluster.ClusterReport(
            ready=True,
            instances={},
            nodes=[
                cluster.NodeSummary(
                    name=_node(i),
                    state="ENABLED",
                    hypervisor="fake",
                    total=none,
                    free=none,
                    network_generation=self.applied.get(_node(i), 0),
                    underlay=_underlay(i),
                )
                for i in range(self.nodes)
            ],
        )


# -- timing ---------------------------------------------------------------------------------------


def _timed(fn: Callable[[], object]) -> float:
    """CPU ms of `fn` (this process is one thread: CPU time is less disturbed than wall time on a
    shared machine)."""
    started = time.process_time()
    fn()
    return 1000 * (time.process_time() - started)


def _median(values: list[float]) -> float:
    return statistics.median(values)


def publish_figures(
    db: Database, module: ModuleType, zone: Zone, repeats: int, launch: Callable[[], None]
) -> dict[str, float]:
    """One Publisher of `module` against the database: first pass, unchanged passes, and passes after
    `launch` (which adds one instance per node), in ms; documents sent and their MB per pass."""
    publisher = module.Publisher(db, {"z": zone})
    out: dict[str, float] = {}
    zone.reset()
    out["first pass"] = _timed(lambda: publisher.publish({"z": zone.report()}))
    out["first pass: encoding what was sent"] = zone.encoding_ms
    out["first pass: documents sent"], out["first pass: MB sent"] = zone.sent, zone.bytes / 1e6
    steady = []
    for _ in range(repeats):
        zone.reset()
        steady.append(_timed(lambda: publisher.publish({"z": zone.report()})))
    out["unchanged pass"], out["unchanged pass: documents sent"] = _median(steady), zone.sent
    changed, encoding = [], []
    for _ in range(repeats):
        launch()
        zone.reset()
        changed.append(_timed(lambda: publisher.publish({"z": zone.report()})))
        encoding.append(zone.encoding_ms)
    out["launch pass (1 new per node)"] = _median(changed)
    out["launch pass: encoding what was sent"] = _median(encoding)
    out["launch pass: documents sent"], out["launch pass: MB sent"] = zone.sent, zone.bytes / 1e6
    return out


def same_documents(db: Database, base: ModuleType, nodes: int) -> bool:
    underlays = {_node(i): _underlay(i) for i in range(nodes)}
    with db.session() as s:
        ours = network_state.documents(s, underlays)
        theirs = base.documents(s, underlays)
    return bool(ours == theirs)


def absorb_figure(module: ModuleType, level: int, nodes: int, repeats: int, workdir: Path) -> float:
    """ms for one CC poll's absorption: each node's report of its instances, all running."""
    cc = module.ClusterController(b"k", workdir / f"nodes-{module.__name__}.json", overcommit=None)
    names = [_node(i) for i in range(nodes)]
    for name in names:
        cc._add_node(name)
    needs = node.Resources(cores=1, memory_mib=256, disk_gib=5)
    reports = {
        name: node.NodeReport(
            instances={
                f"i-{n:017x}": node.NodeInstance(state="running", needs=needs) for n in range(i, level, nodes)
            },
            resources=node.Resources(cores=128, memory_mib=128 * 256, disk_gib=128 * 5),
            hypervisor="fake",
        )
        for i, name in enumerate(names)
    }

    def poll() -> None:
        asked = time.monotonic()
        with cc.lock:
            for name in names:
                cc._absorb(cc.nodes[name], reports[name], asked)

    poll()  # adopts every instance
    assert len(cc.placements) == level
    return _median([_timed(poll) for _ in range(repeats)])


def validate_figure(module: ModuleType, db: Database, nodes: int, repeats: int) -> float:
    """ms to check one node's pushed network, as the fake driver does on every apply."""
    underlays = {_node(i): _underlay(i) for i in range(nodes)}
    with db.session() as s:
        docs = network_state.documents(s, underlays)
    state = driver_state(node.NodeNetwork(generation=1, vpcs=docs[_node(0)]), UNDERLAY)
    return _median([_timed(lambda: module.validate(state)) for _ in range(repeats)])


# -- the run --------------------------------------------------------------------------------------


def load(base: Path, relative: str, name: str) -> ModuleType:
    """The module at `base/src/relative`, as `name` (it imports this tree's other modules)."""
    spec = importlib.util.spec_from_file_location(name, base / "src" / relative)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


class _Launcher:
    """Adds one running instance to each node, after the ones there are."""

    def __init__(self, db: Database, first: int, nodes: int) -> None:
        self.db, self.next, self.nodes = db, first, nodes

    def __call__(self) -> None:
        add_instances(self.db, self.next, self.nodes, self.nodes)
        self.next += self.nodes


def measure(
    level: int, nodes: int, repeats: int, trees: dict[str, dict[str, ModuleType]], workdir: Path
) -> dict[str, dict[str, float]]:
    results: dict[str, dict[str, float]] = {}
    for label, modules in trees.items():
        db = make_database(workdir / f"clc-{level}-{label}.db")
        try:
            add_instances(db, 0, level, nodes)
            launch = _Launcher(db, level, nodes)
            figures = publish_figures(db, modules["network_state"], Zone(nodes), repeats, launch)
            figures["CC poll absorbed"] = absorb_figure(modules["controller"], level, nodes, repeats, workdir)
            figures["validate one node's network"] = validate_figure(modules["vpc_model"], db, nodes, repeats)
            if "before" in trees and label == "after":
                figures["same documents"] = float(same_documents(db, trees["before"]["network_state"], nodes))
            results[label] = figures
        finally:
            db.dispose()
    return results


def print_table(level: int, results: dict[str, dict[str, float]]) -> None:
    labels = list(results)
    print(f"\nat {level:,} instances")
    print(
        f"  {'figure':<40}"
        + "".join(f"{label:>14}" for label in labels)
        + ("       ratio" if len(labels) == 2 else "")
    )
    for key in results[labels[-1]]:
        values = [results[label].get(key) for label in labels]
        cells = "".join(f"{v:>14,.1f}" if v is not None else f"{'-':>14}" for v in values)
        ratio = ""
        if len(values) == 2 and values[0] and values[1] and ":" not in key:
            ratio = f"{values[0] / values[1]:>11.1f}x"
        print(f"  {key:<40}{cells}{ratio}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--levels", default="1000,10000")
    parser.add_argument("--nodes", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--base", type=Path, default=None, help="a tree whose code is the 'before'")
    args = parser.parse_args(argv)
    trees: dict[str, dict[str, ModuleType]] = {}
    if args.base is not None:
        trees["before"] = {
            "network_state": load(args.base, "mallee/services/clc/network_state.py", "base_network_state"),
            "controller": load(args.base, "mallee/services/cluster/controller.py", "base_controller"),
            "vpc_model": load(args.base, "mallee/drivers/network/vpc_model.py", "base_vpc_model"),
        }
    trees["after"] = {"network_state": network_state, "controller": controller, "vpc_model": vpc_model}
    print(
        f"{args.nodes} nodes, one VPC, every interface in the default group;"
        f" median of {args.repeats}; CPU ms unless named"
    )
    with tempfile.TemporaryDirectory(prefix="publish-cost-") as tmp:
        for level in (int(x) for x in args.levels.split(",")):
            print_table(level, measure(level, args.nodes, args.repeats, trees, Path(tmp)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
