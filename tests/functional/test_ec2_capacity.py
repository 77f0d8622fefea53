"""A zone's capacity through the EC2 API: launches at once never take more than its node offers, a
full zone answers InsufficientInstanceCapacity, and `describe-availability-zones verbose` counts
the room the overcommit ratios give. Each test runs a cloud of its own, sized for it; the
concurrency test runs with the CLC's database on SQLite and on PostgreSQL."""

from __future__ import annotations

import atexit
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from support.cloud import Cloud, start_cloud, stop_cloud, wait_for
from support.postgres import admin, start_server

# Room for exactly ten t1.micro (1 vCPU, 256 MiB, 5 GiB): 5 cores × 2.0 = 10 vCPUs, while memory
# (64 of them) and disk (40) have room for more.
ROOM_FOR_TEN = {
    "MALLEE_NODE_CORES": "5",
    "MALLEE_CPU_OVERCOMMIT": "2.0",
    "MALLEE_MEMORY_OVERCOMMIT": "1.0",
    "MALLEE_NODE_MEMORY_MIB": "16384",
    "MALLEE_NODE_DISK_GIB": "200",
}
LAUNCHES = 20


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def room_for_ten(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cloud]:
    env = dict(ROOM_FOR_TEN)
    server = None
    if request.param == "postgresql":
        try:
            server = start_server()
        except RuntimeError as exc:
            pytest.fail(str(exc), pytrace=False)
        atexit.register(server.stop)  # a session torn down abnormally
        admin(server.url("postgres"), "CREATE DATABASE clc")
        env["MALLEE_DATABASE_URL"] = server.url("clc")
    try:
        cloud = start_cloud(tmp_path_factory.mktemp(f"capacity-{request.param}"), env)
        try:
            yield cloud
        finally:
            stop_cloud(cloud)
    finally:
        if server is not None:
            server.stop()


def capacity(cloud: Cloud, instance_type: str) -> tuple[int, int]:
    """(free, max) of the type in the zone's verbose listing, as Eucalyptus printed it."""
    zones = cloud.client("ec2").describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    row = next(z for z in zones if z["ZoneName"] == f"|- {instance_type}")
    free, _, most = row["State"].split()[:3]
    return int(free), int(most)


def test_twenty_launches_at_once_on_room_for_ten_run_exactly_ten(room_for_ten: Cloud) -> None:
    cloud = room_for_ten
    account = cloud.new_account()
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    assert capacity(cloud, "t1.micro") == (10, 10)
    clients = [cloud.client("ec2", account) for _ in range(LAUNCHES)]
    start = threading.Barrier(LAUNCHES)

    def launch(client: Any) -> str:
        start.wait()
        try:
            answer = client.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=1, MaxCount=1)
        except ClientError as err:
            return str(err.response["Error"]["Code"])
        return str(answer["Instances"][0]["InstanceId"])

    with ThreadPoolExecutor(LAUNCHES) as pool:
        outcomes = list(pool.map(launch, clients))
    launched = sorted(o for o in outcomes if o.startswith("i-"))
    assert len(launched) == 10, outcomes
    assert outcomes.count("InsufficientInstanceCapacity") == 10, outcomes
    wait_state(ec2, launched, "running")

    def live() -> list[str]:
        reservations = ec2.describe_instances()["Reservations"]
        return sorted(
            i["InstanceId"]
            for r in reservations
            for i in r["Instances"]
            if i["State"]["Name"] != "terminated"
        )

    assert live() == launched  # the refused ten were never shown, nor placed later
    wait_for("the zone to count the ten", lambda: capacity(cloud, "t1.micro") == (0, 10), 15, every=0.5)
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=1, MaxCount=1)
    assert err.value.response["Error"]["Code"] == "InsufficientInstanceCapacity"

    ec2.terminate_instances(InstanceIds=launched[:1])
    wait_state(ec2, launched[:1], "terminated")
    wait_for("the terminated one's room", lambda: capacity(cloud, "t1.micro") == (1, 10), 15, every=0.5)
    again = ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=1, MaxCount=1)
    ec2.terminate_instances(InstanceIds=[*launched[1:], again["Instances"][0]["InstanceId"]])


def test_a_two_core_node_with_the_default_overcommit_offers_eight_vcpus(tmp_path: Path) -> None:
    """Without an overcommit setting a core offers 4 vCPUs: a 2-core host, which once ran two
    m1.small and refused the third, runs eight."""
    cloud = start_cloud(
        tmp_path, {"MALLEE_NODE_CORES": "2", "MALLEE_NODE_MEMORY_MIB": "4096", "MALLEE_NODE_DISK_GIB": "200"}
    )
    try:
        assert capacity(cloud, "m1.small") == (8, 8)  # memory has room for 16, disk for 40
        account = cloud.new_account()
        ami = register_tiny_image(cloud, account)
        ec2 = cloud.client("ec2", account)
        answer = ec2.run_instances(ImageId=ami, InstanceType="m1.small", MinCount=8, MaxCount=9)
        assert len(answer["Instances"]) == 8
        launched = [i["InstanceId"] for i in answer["Instances"]]
        wait_state(ec2, launched, "running")
        wait_for("the zone to count the eight", lambda: capacity(cloud, "m1.small") == (0, 8), 15, every=0.5)
    finally:
        stop_cloud(cloud)
