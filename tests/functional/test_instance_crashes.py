"""Launches that cannot be lost: the CLC, the CC and the NC are SIGKILLed at named points of
RunInstances (MinCount > 1, ClientToken), RebootInstances and TerminateInstances — between
"recorded" and "placed", between "placed" and "answered", half-way through a node's launch or
terminate — and at random moments; the supervisor restarts them. After things settle, for every run:
every VM the node holds is an instance the CLC shows running, every running instance has a VM,
nothing is left pending or shutting-down, no address, MAC or tap is leaked or held twice, and a
retried RunInstances with the same ClientToken makes no second VM.

The node runs the fake hypervisor with its host kept on disk, so its "VMs" outlive a killed node
controller as real ones do; the network driver's wiring (the node's last applied VPC network, whose
interfaces are the instances' taps and DHCP entries) is kept on disk too, to be counted."""

from __future__ import annotations

import contextlib
import functools
import json
import os
import random
import secrets
import signal
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image
from support.cloud import Cloud, Keys, retrying, stop_cloud
from support.crash_chains import start_crashy

# (service, point, what the run does when the point is armed)
KILL_POINTS = [
    ("clc", "clc.run.recorded", "run"),
    ("clc", "clc.run.placed", "run"),
    ("clc", "clc.terminate.recorded", "terminate"),
    ("cc", "cc.run.placed", "run"),
    ("cc", "cc.run.sent", "run"),
    ("nc", "nc.launch.saved", "run"),
    ("nc", "nc.launch.spawned", "run"),
    ("nc", "nc.terminate.destroyed", "terminate"),
]
RANDOM_KILLS = [("clc", "run"), ("cc", "run"), ("nc", "run"), ("nc", "terminate"), ("cc", "terminate")]
SETTLE_SECONDS = 90


@pytest.fixture(scope="module")
def crashy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    c = start_crashy(tmp_path_factory, "crashy")
    try:
        yield c
    finally:
        stop_cloud(c)


def _instances(ec2: Any) -> list[dict[str, Any]]:
    pages = retrying(lambda: ec2.describe_instances()["Reservations"])
    return [i for r in pages for i in r["Instances"]]


def _settled(ec2: Any) -> list[dict[str, Any]]:
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        found = _instances(ec2)
        moving = [i["InstanceId"] for i in found if i["State"]["Name"] in ("pending", "shutting-down")]
        if not moving:
            return found
        assert time.monotonic() < deadline, f"still moving after {SETTLE_SECONDS}s: {moving}"
        time.sleep(0.1)


def _node_state(cloud: Cloud) -> tuple[dict[str, Any], list[dict[str, Any]], set[str]]:
    """The node's VMs, its network wiring (the interfaces of its applied VPC network: taps, DHCP
    entries) and its instance directories (overlays)."""
    nc = Path(cloud.env["MALLEE_NODE_DIR"])
    vms = json.loads((nc / "fake-host.json").read_text()) if (nc / "fake-host.json").exists() else {}
    wired = nc / "network" / "fake-vpc-network.json"
    state = json.loads(wired.read_text())["state"] if wired.exists() else None
    interfaces = [i for v in state["vpcs"] for i in v["interfaces"]] if state else []
    dirs = (
        {p.name for p in (nc / "instances").iterdir() if p.is_dir()} if (nc / "instances").exists() else set()
    )
    return vms, interfaces, dirs


def _violations(cloud: Cloud, ec2: Any, found: list[dict[str, Any]]) -> list[str]:
    """Every broken invariant, after waiting for the node's state to match (orphans go after a grace
    period; a terminate's cleanup follows the VM's end)."""
    deadline = time.monotonic() + 30
    while True:
        bad = _check(cloud, found)
        if not bad or time.monotonic() > deadline:
            return bad
        time.sleep(0.1)
        found = _settled(ec2)


def _check(cloud: Cloud, found: list[dict[str, Any]]) -> list[str]:
    vms, wired, dirs = _node_state(cloud)
    running = {i["InstanceId"]: i for i in found if i["State"]["Name"] == "running"}
    bad = [f"{vm} runs on the node but the CLC shows no running instance" for vm in vms if vm not in running]
    bad += [f"{i} is running but has no VM" for i in running if i not in vms]
    bad += [
        f"{i['InstanceId']} is {i['State']['Name']}"
        for i in found
        if i["State"]["Name"] in ("pending", "shutting-down")
    ]
    ips = [i.get("PrivateIpAddress") for i in running.values()]
    bad += [f"address {ip} is held twice" for ip in set(ips) if ips.count(ip) > 1]
    taps = {w["instance_id"]: w for w in wired}
    bad += [f"{t} is still wired (interface, DHCP entry) without a VM" for t in taps if t not in vms]
    bad += [f"{v} runs without its network" for v in vms if v not in taps]
    bad += [f"{d}'s overlay and launch are left on the node without a VM" for d in dirs if d not in vms]
    bad += [
        f"{i} is wired with {taps[i]['private_ip']}, the CLC recorded {running[i].get('PrivateIpAddress')}"
        for i in running
        if i in taps and taps[i]["private_ip"] != running[i].get("PrivateIpAddress")
    ]
    return bad


def _lost(ec2: Any, kept: str) -> list[str]:
    found = next(i for i in _instances(ec2) if i["InstanceId"] == kept)
    if found["State"]["Name"] == "running":
        return []
    return [f"{kept} was launched but ended {found['State']['Name']} ({found.get('StateReason')})"]


def _arm(cloud: Cloud, point: str) -> None:
    (Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / point).touch()


def _kill_later(cloud: Cloud, service: str, rng: random.Random) -> None:
    """SIGKILL the service's process at a random moment of the next second or so."""
    pid = cloud.service_pid(service)

    def kill() -> None:
        time.sleep(rng.uniform(0.0, 1.2))
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    threading.Thread(target=kill, daemon=True).start()


def _burst(cloud: Cloud, ec2: Any, ami: str, action: str, arm: Callable[[], None]) -> str:
    """One run: launch a reservation (MinCount 2, MaxCount 3, ClientToken); with action "run" the
    crash is armed before the launch, with "terminate" before terminating it. Returns the id of
    the instance left running (a launch is never lost: it must end up running)."""
    token = secrets.token_hex(8)

    def launch() -> dict[str, Any]:
        return dict(
            ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=2, MaxCount=3, ClientToken=token)
        )

    if action == "run":
        arm()
    reservation = retrying(launch)
    ids = [i["InstanceId"] for i in reservation["Instances"]]
    _settled(ec2)
    up = [
        i["InstanceId"] for i in _instances(ec2) if i["InstanceId"] in ids and i["State"]["Name"] == "running"
    ]
    if up:
        retrying(lambda: ec2.reboot_instances(InstanceIds=up[:1]))
    # Two of this reservation go, and the survivors of earlier runs: one instance stays running
    # through the next run's crash, to be re-adopted or kept.
    older = [
        i["InstanceId"]
        for i in _instances(ec2)
        if i["InstanceId"] not in ids and i["State"]["Name"] == "running"
    ]
    if action == "terminate":
        arm()
    retrying(lambda: ec2.terminate_instances(InstanceIds=ids[:2] + older))
    again = retrying(launch)  # the same ClientToken: the same reservation, no new VM
    assert again["ReservationId"] == reservation["ReservationId"]
    return str(ids[2])


Runs = list[tuple[str, Callable[[], None], str, str | None]]  # (name, arm, action, kill point)


def _chain(cloud: Cloud, runs: Runs) -> list[tuple[str, list[str]]]:
    """`runs` (name, arm, action, kill point if named) one after another on `cloud` and a fresh
    account of it, each with the instance the one before kept running through it; then every
    instance is terminated. Each run's violations."""
    keys: Keys = cloud.new_account("crash")
    ec2 = cloud.client("ec2", keys)
    ami = register_tiny_image(cloud, keys)
    done: list[tuple[str, list[str]]] = []
    for name, arm, action, point in runs:
        kept = _burst(cloud, ec2, ami, action, arm)
        bad = _violations(cloud, ec2, _settled(ec2)) + _lost(ec2, kept)
        if point is not None:
            reached = not (Path(cloud.env["MALLEE_CRASH_POINTS_DIR"]) / point).exists()  # removed as it kills
            bad += [] if reached else [f"{point} was never reached"]
        done.append((name, bad))
    running = [i["InstanceId"] for i in _instances(ec2) if i["State"]["Name"] == "running"]
    if running:
        retrying(lambda: ec2.terminate_instances(InstanceIds=running))
    done.append(("everything terminated", _violations(cloud, ec2, _settled(ec2))))
    assert not _node_state(cloud)[0], "VMs are left after every instance was terminated"
    return done


def _named(cloud: Cloud, service: str) -> Runs:
    """The runs of `service`'s named kill points, on `cloud`."""
    return [
        (point, functools.partial(_arm, cloud, point), action, point)
        for killed, point, action in KILL_POINTS
        if killed == service
    ]


def _random(cloud: Cloud) -> Runs:
    rng = random.Random(12)
    return [
        (
            f"random kill of {service} during {action}",
            functools.partial(_kill_later, cloud, service, rng),
            action,
            None,
        )
        for service, action in RANDOM_KILLS
    ]


def _chains_of_their_own(
    tmp_path_factory: pytest.TempPathFactory, chains: list[Callable[[Cloud], Runs]]
) -> list[tuple[str, list[str]]]:
    """Each chain of runs on a cloud of its own (a service's restart backoff grows with each of its
    crashes), all at once. Each begins with a run without a crash: its first run then has an
    instance of an earlier run kept running through it too, as every run but the very first has
    on one cloud."""

    def chain(runs: Callable[[Cloud], Runs]) -> list[tuple[str, list[str]]]:
        cloud = start_crashy(tmp_path_factory, "crashy")
        try:
            return _chain(cloud, [("no crash", lambda: None, "run", None), *runs(cloud)])
        finally:
            stop_cloud(cloud)

    with ThreadPoolExecutor(len(chains)) as pool:
        running = [pool.submit(chain, runs) for runs in chains]
        return [run for done in running for run in done.result()]


def test_no_crash_loses_or_leaks_an_instance(crashy: Cloud, tmp_path_factory: pytest.TempPathFactory) -> None:
    # Three chains of runs at once: the CLC's and the CC's kill points on this cloud, the NC's and
    # the random kills each on a cloud of their own.
    with ThreadPoolExecutor(1) as pool:
        others = pool.submit(_chains_of_their_own, tmp_path_factory, [lambda c: _named(c, "nc"), _random])
        runs = _chain(crashy, _named(crashy, "clc") + _named(crashy, "cc"))
        runs += others.result()
    total = sum(len(v) for _, v in runs)
    print(
        f"\ncrash tests: {len(KILL_POINTS)} kill points + {len(RANDOM_KILLS)} random kills, "
        f"{len(runs)} runs, {total} violations"
    )
    for name, violations in runs:
        print(f"  {name}: {len(violations)} violations {violations if violations else ''}")
    assert total == 0, runs
