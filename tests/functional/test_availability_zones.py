"""A second availability zone: its cluster controller is another `mallee serve cc` (zone mallee-1b,
on an address of its own) that the administrator registers (`mallee cluster register`,
RegisterCluster); simulated nodes serve each zone. Instances go to the zone they ask for (or their
subnet's), run on that zone's nodes, and a zone whose controller dies is unavailable while the
other carries on; back, it is reconciled and nothing was lost. Its storage controller is another
`mallee serve sc` (`mallee storage register`, RegisterStorageController): volumes, attachments
and snapshots there, and a zone whose SC dies refuses volume work while the other carries on."""

from __future__ import annotations

import re
import secrets
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.cli.client import ApiError
from mallee.rpc import cluster, storage
from mallee.rpc.contract import Empty
from mallee.rpc.transport import Client, load_key
from support.cloud import Cloud, Keys, start_cloud, stop_cloud, stop_process, wait_for

SECOND = "mallee-1b"
FIRST = "mallee-1a"


@dataclass
class Zones:
    cloud: Cloud
    cc_host: str  # the second zone's cluster controller's address (its first node's too)
    cc_port: int
    node_port: int
    nodes_a: list[str]  # simulated nodes registered in mallee-1a (address:port)
    nodes_b: list[str]  # and in mallee-1b
    processes: dict[str, subprocess.Popen[bytes]]
    cc_dir: Path
    logs: Path

    def start_cc(self) -> None:
        env = {
            **self.cloud.env,
            "MALLEE_ZONE": SECOND,
            "MALLEE_HOST": self.cc_host,
            "MALLEE_DATA_DIR": str(self.cc_dir),
        }
        log = open(self.logs / "cc-b.log", "ab")  # noqa: SIM115  (the process keeps it)
        command = [sys.executable, "-m", "mallee.supervisor", "serve", "cc"]
        self.processes["cc"] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        wait_for("the second zone's cluster controller", lambda: _answers(self.cc()), 30, 0.2)

    def cc(self) -> Client:
        key = load_key(self.cloud.data_dir / "deployment.key")
        return Client(f"http://{self.cc_host}:{self.cc_port}", key, timeout=5)


def _answers(client: Client) -> bool:
    try:
        client.call(cluster.DESCRIBE, Empty())
    except OSError:
        return False
    return True


def _start_fleet(
    cloud: Cloud, zone: str, first: str, count: int, log_path: Path
) -> tuple[subprocess.Popen[bytes], int]:
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "nc-sim", "--count", str(count)]
    command += ["--first-address", first, "--cores", "2", "--memory-mib", "512", "--disk-gib", "20"]
    command += ["--boot-delay", "0.1", "--zone", zone]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, env=cloud.env, stdout=log, stderr=subprocess.STDOUT)
    found = wait_for(
        f"the simulated nodes of {zone}",
        lambda: re.search(r"serving .*, port (\d+)", log_path.read_text(errors="replace")),
        30,
        0.2,
    )
    return process, int(found[1])


@pytest.fixture(scope="module")
def zones(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Zones]:
    """A cloud whose own node fits one t1.micro, two simulated nodes in its zone, and three in a
    second zone whose cluster controller runs apart (not registered yet)."""
    base = tmp_path_factory.mktemp("zones")
    cloud = start_cloud(
        base, {"MALLEE_NODE_CORES": "1", "MALLEE_NODE_MEMORY_MIB": "256", "MALLEE_NODE_DISK_GIB": "5"}
    )
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        net_a, net_b = (f"127.0.{n}" for n in secrets.SystemRandom().sample(range(10, 250), 2))
        processes["fleet-a"], port = _start_fleet(cloud, FIRST, f"{net_a}.1", 2, base / "nc-sim-a.log")
        processes["fleet-b"], _ = _start_fleet(cloud, SECOND, f"{net_b}.1", 3, base / "nc-sim-b.log")
        cc_dir = base / "cc-b"
        cc_dir.mkdir()
        shutil.copy(cloud.data_dir / "deployment.key", cc_dir / "deployment.key")
        z = Zones(
            cloud,
            cc_host=f"{net_b}.1",
            cc_port=cloud.port_base + 1,
            node_port=port,
            nodes_a=[f"{net_a}.{n}:{port}" for n in (1, 2)],
            nodes_b=[f"{net_b}.{n}:{port}" for n in (1, 2, 3)],  # .1 is the controller's own node
            processes=processes,
            cc_dir=cc_dir,
            logs=base,
        )
        z.start_cc()
        api = cloud.admin_api()
        for name in z.nodes_a:
            api.call("ec2", "RegisterNode", {"Host": name.split(":")[0], "Port": port, "Zone": FIRST})
        yield z
    finally:
        for process in processes.values():
            stop_process(process)
        stop_cloud(cloud)


def _zone_views(ec2: Any, verbose: bool = False) -> list[dict[str, Any]]:
    names = ["verbose"] if verbose else []
    return list(ec2.describe_availability_zones(ZoneNames=names)["AvailabilityZones"])


def _capacity(ec2: Any) -> dict[str, str]:
    """Zone -> its t1.micro row ("free / max …") in the verbose listing."""
    out, zone = {}, ""
    for row in _zone_views(ec2, verbose=True):
        if not row["ZoneName"].startswith("|- "):
            zone = row["ZoneName"]
        elif row["ZoneName"] == "|- t1.micro":
            out[zone] = row["State"]
    return out


def _refusal(call: Any) -> tuple[int, str, str]:
    with pytest.raises(ApiError) as refused:
        call()
    return refused.value.status, refused.value.code, refused.value.message


def test_an_unregistered_controller_makes_no_zone_and_bad_registrations_are_refused(zones: Zones) -> None:
    api, ec2 = zones.cloud.admin_api(), zones.cloud.client("ec2")
    # The second controller heartbeats (the deployment key), yet the zone is not there until registered.
    wait_for(
        "the second controller's heartbeat",
        lambda: "cc-mallee-1b" in "".join(api.call("ec2", "DescribeServices").itertext()),
        15,
        0.3,
    )
    assert [z["ZoneName"] for z in _zone_views(ec2)] == [FIRST]
    status, code, message = _refusal(
        lambda: api.call(
            "ec2", "RegisterNode", {"Host": zones.cc_host, "Port": zones.node_port, "Zone": SECOND}
        )
    )
    assert (status, code) == (400, "InvalidParameterValue") and SECOND in message

    cc = {"Host": zones.cc_host, "Port": zones.cc_port}
    assert _refusal(lambda: api.call("ec2", "RegisterCluster", {**cc, "Zone": "Bad_Zone"}))[:2] == (
        400,
        "InvalidParameterValue",
    )
    assert _refusal(lambda: api.call("ec2", "RegisterCluster", {**cc, "Port": 0, "Zone": SECOND}))[1] == (
        "InvalidParameterValue"
    )
    bad_host = {"Host": "not a host", "Port": zones.cc_port, "Zone": SECOND}
    assert _refusal(lambda: api.call("ec2", "RegisterCluster", bad_host))[1] == "InvalidParameterValue"
    # Another zone's name for this controller: it says which zone it serves.
    status, code, message = _refusal(lambda: api.call("ec2", "RegisterCluster", {**cc, "Zone": "mallee-1c"}))
    assert (status, code) == (400, "InvalidParameterValue") and "mallee-1b" in message
    # The CLC's own zone at another address.
    status, code, message = _refusal(lambda: api.call("ec2", "RegisterCluster", {**cc, "Zone": FIRST}))
    assert (status, code) == (400, "InvalidParameterValue") and "already registered" in message
    # Nobody answering there: no zone is made.
    nobody = {"Host": zones.cc_host, "Port": zones.cc_port + 20, "Zone": "mallee-1c"}
    status, code, message = _refusal(lambda: api.call("ec2", "RegisterCluster", nobody))
    assert (status, code) == (
        503,
        "ServiceUnavailable",
    ) and f"{zones.cc_host}:{zones.cc_port + 20}" in message
    assert [z["ZoneName"] for z in _zone_views(ec2)] == [FIRST]


def test_a_registered_zone_is_listed_with_its_capacity_and_takes_nodes(zones: Zones) -> None:
    args = ["cluster", "register", zones.cc_host, "--port", str(zones.cc_port), "--zone", SECOND]
    registered = zones.cloud.run("mallee", *args)
    assert registered.returncode == 0, registered.stderr
    assert f"registered zone {SECOND}" in registered.stdout
    again = zones.cloud.run("mallee", *args)  # the same registration again changes nothing
    assert again.returncode == 0, again.stderr
    api = zones.cloud.admin_api()
    for name in zones.nodes_b[1:]:
        host, port = name.split(":")
        node = zones.cloud.run("mallee", "node", "register", host, "--port", port, "--zone", SECOND)
        assert node.returncode == 0, node.stderr

    ec2 = zones.cloud.client("ec2")
    views = _zone_views(ec2)
    assert [(z["ZoneName"], z["ZoneId"]) for z in views] == [
        (FIRST, "mallee-1-az1"),
        (SECOND, "mallee-1-az2"),
    ]
    # Room for 2 t1.micro per simulated node (512 MiB), 1 on the cloud's own node.
    wait_for(
        "both zones' capacity",
        lambda: (
            {z: row.split("/")[1].split()[0] for z, row in _capacity(ec2).items()}
            == {FIRST: "0005", SECOND: "0006"}
        ),
        20,
        0.5,
    )
    assert {z["ZoneName"]: z["State"] for z in _zone_views(ec2)} == {FIRST: "available", SECOND: "available"}
    nodes = api.call("ec2", "DescribeNodes", {"Zone": SECOND})
    listed = sorted(item.findtext("nodeName", "") for item in nodes.iterfind("./nodeSet/item"))
    assert listed == sorted(zones.nodes_b)


def _landed(zones: Zones, ids: list[str]) -> dict[str, str]:
    """Instance -> node, from the second zone's controller."""
    report = zones.cc().call(cluster.DESCRIBE, Empty())
    return {i: seen.node for i, seen in report.instances.items() if i in ids}


def _zone_of(ec2: Any, ids: list[str]) -> dict[str, str]:
    found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["Placement"]["AvailabilityZone"] for r in found for i in r["Instances"]}


@pytest.fixture(scope="module")
def account(zones: Zones) -> tuple[Keys, str]:
    keys = zones.cloud.new_account("zones")
    return keys, register_tiny_image(zones.cloud, keys)


def test_instances_run_in_the_zone_they_ask_for_or_their_subnet_is_in(
    zones: Zones, account: tuple[Keys, str]
) -> None:
    keys, ami = account
    ec2 = zones.cloud.client("ec2", keys)
    launch = {"ImageId": ami, "InstanceType": "t1.micro"}
    in_b = [
        i["InstanceId"]
        for i in ec2.run_instances(**launch, MinCount=3, MaxCount=3, Placement={"AvailabilityZone": SECOND})[
            "Instances"
        ]
    ]
    in_a = [i["InstanceId"] for i in ec2.run_instances(**launch, MinCount=2, MaxCount=2)["Instances"]]
    wait_state(ec2, in_b + in_a, "running", timeout=30)
    assert _zone_of(ec2, in_b + in_a) == {**dict.fromkeys(in_b, SECOND), **dict.fromkeys(in_a, FIRST)}
    assert set(_landed(zones, in_b).values()) <= set(zones.nodes_b) and set(_landed(zones, in_b)) == set(in_b)
    assert not _landed(zones, in_a)

    # Default subnets in both zones; a subnet of one's own in the second zone takes its instances there.
    defaults = ec2.describe_subnets(Filters=[{"Name": "default-for-az", "Values": ["true"]}])["Subnets"]
    assert {(n["AvailabilityZone"], n["AvailabilityZoneId"]) for n in defaults} == {
        (FIRST, "mallee-1-az1"),
        (SECOND, "mallee-1-az2"),
    }
    vpc = ec2.create_vpc(CidrBlock="10.20.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.20.1.0/24", AvailabilityZoneId="mallee-1-az2")[
        "Subnet"
    ]
    assert subnet["AvailabilityZone"] == SECOND
    (placed,) = ec2.run_instances(**launch, MinCount=1, MaxCount=1, SubnetId=subnet["SubnetId"])["Instances"]
    assert placed["Placement"]["AvailabilityZone"] == SECOND
    wait_state(ec2, [placed["InstanceId"]], "running", timeout=30)
    assert placed["InstanceId"] in _landed(zones, [placed["InstanceId"]])

    # Refused by name: a zone that does not exist, a subnet of the other zone, volumes without an SC.
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(**launch, MinCount=1, MaxCount=1, Placement={"AvailabilityZone": "mallee-1z"})
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as refused:
        ec2.run_instances(
            **launch,
            MinCount=1,
            MaxCount=1,
            SubnetId=subnet["SubnetId"],
            Placement={"AvailabilityZone": FIRST},
        )
    assert refused.value.response["Error"]["Code"] == "InvalidParameterValue"
    with pytest.raises(ClientError) as refused:
        ec2.create_volume(Size=1, AvailabilityZone=SECOND)
    assert refused.value.response["Error"]["Code"] == "Unsupported"
    assert SECOND in refused.value.response["Error"]["Message"]
    assert ec2.create_volume(Size=1, AvailabilityZone=FIRST)["AvailabilityZone"] == FIRST
    ec2.terminate_instances(InstanceIds=[placed["InstanceId"]])
    wait_state(ec2, [placed["InstanceId"]], "terminated", timeout=30)


def test_a_dead_zone_is_unavailable_the_other_carries_on_and_nothing_is_lost(
    zones: Zones, account: tuple[Keys, str]
) -> None:
    keys, ami = account
    ec2 = zones.cloud.client("ec2", keys)
    in_b = [i for i, zone in _zone_of(ec2, _running(ec2)).items() if zone == SECOND]
    assert in_b
    zones.processes["cc"].send_signal(signal.SIGKILL)
    zones.processes["cc"].wait(10)

    admin = zones.cloud.client("ec2")
    wait_for(
        "the second zone unavailable",
        lambda: (
            {z["ZoneName"]: z["State"] for z in _zone_views(admin)}
            == {FIRST: "available", SECOND: "unavailable"}
        ),
        30,
        0.5,
    )
    launch = {"ImageId": ami, "InstanceType": "t1.micro", "MinCount": 1, "MaxCount": 1}
    (a,) = ec2.run_instances(**launch)["Instances"]
    wait_state(ec2, [a["InstanceId"]], "running", timeout=30)  # the first zone is not held up
    (b,) = ec2.run_instances(**launch, Placement={"AvailabilityZone": SECOND})["Instances"]
    assert b["State"]["Name"] == "pending"  # recorded; placed once its zone answers again
    assert set(_states(ec2, in_b).values()) == {"running"}

    zones.start_cc()  # the same address and directory: it keeps its registered nodes
    wait_state(ec2, [b["InstanceId"]], "running", timeout=40)
    wait_for(
        "the second zone available again",
        lambda: (
            {z["ZoneName"]: z["State"] for z in _zone_views(admin)}
            == {FIRST: "available", SECOND: "available"}
        ),
        20,
        0.5,
    )
    assert set(_states(ec2, in_b).values()) == {"running"}
    assert set(_landed(zones, [*in_b, b["InstanceId"]])) == {*in_b, b["InstanceId"]}

    everything = _running(ec2)
    ec2.terminate_instances(InstanceIds=everything)
    wait_state(ec2, everything, "terminated", timeout=40)


def _running(ec2: Any) -> list[str]:
    found = ec2.describe_instances(
        Filters=[{"Name": "instance-state-name", "Values": ["running", "pending"]}]
    )
    return [i["InstanceId"] for r in found["Reservations"] for i in r["Instances"]]


def _states(ec2: Any, ids: list[str]) -> dict[str, str]:
    found = ec2.describe_instances(InstanceIds=ids)["Reservations"]
    return {i["InstanceId"]: i["State"]["Name"] for r in found for i in r["Instances"]}


# -- the second zone's storage controller ----------------------------------------------------------


def _start_sc(zones: Zones) -> tuple[str, int]:
    """The second zone's storage controller: another `mallee serve sc` (zone mallee-1b) with a data
    directory of its own, at the second controller's address; its host and port."""
    sc_dir = zones.logs / "sc-b"
    sc_dir.mkdir(exist_ok=True)
    shutil.copy(zones.cloud.data_dir / "deployment.key", sc_dir / "deployment.key")
    env = {
        **zones.cloud.env,
        "MALLEE_ZONE": SECOND,
        "MALLEE_HOST": zones.cc_host,
        "MALLEE_DATA_DIR": str(sc_dir),
    }
    log = open(zones.logs / "sc-b.log", "ab")  # noqa: SIM115  (the process keeps it)
    command = [sys.executable, "-m", "mallee.supervisor", "serve", "sc"]
    zones.processes["sc"] = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
    key = load_key(zones.cloud.data_dir / "deployment.key")
    port = zones.cloud.port_base + 3
    sc = Client(f"http://{zones.cc_host}:{port}", key, timeout=5)
    wait_for("the second zone's storage controller", lambda: _sc_answers(sc), 30, 0.2)
    return zones.cc_host, port


def _sc_answers(client: Client) -> bool:
    try:
        client.call(storage.DESCRIBE, Empty())
    except OSError:
        return False
    return True


def _not_ready(api: Any) -> set[str]:
    """The components DescribeServices shows NOTREADY."""
    services = api.call("ec2", "DescribeServices").iterfind(".//serviceStatusSet/item")
    return {item.findtext("serviceName", "") for item in services if item.findtext("state") == "NOTREADY"}


def _volume_state(ec2: Any, volume_id: str) -> str:
    return str(ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["State"])


def _snapshot_state(ec2: Any, snapshot_id: str) -> str:
    return str(ec2.describe_snapshots(SnapshotIds=[snapshot_id])["Snapshots"][0]["State"])


def _error(call: Any) -> dict[str, Any]:
    with pytest.raises(ClientError) as refused:
        call()
    return {
        **refused.value.response["Error"],
        "Status": refused.value.response["ResponseMetadata"]["HTTPStatusCode"],
    }


def test_a_registered_storage_controller_gives_its_zone_volumes_and_snapshots(
    zones: Zones, account: tuple[Keys, str]
) -> None:
    keys, ami = account
    host, port = _start_sc(zones)
    api = zones.cloud.admin_api()
    sc = {"Host": host, "Port": port}
    # Refused: a zone nobody registered, a zone that has its controller, an address nobody answers at.
    status, code, message = _refusal(
        lambda: api.call("ec2", "RegisterStorageController", {**sc, "Zone": "mallee-1c"})
    )
    assert (status, code) == (400, "InvalidZone.NotFound") and "mallee-1c" in message
    status, code, message = _refusal(
        lambda: api.call("ec2", "RegisterStorageController", {**sc, "Zone": FIRST})
    )
    assert (status, code) == (400, "InvalidParameterValue") and "already registered" in message
    nobody = {"Host": host, "Port": port + 20, "Zone": SECOND}
    status, code, message = _refusal(lambda: api.call("ec2", "RegisterStorageController", nobody))
    assert (status, code) == (503, "ServiceUnavailable") and f"{host}:{port + 20}" in message
    ec2 = zones.cloud.client("ec2", keys)
    assert _error(lambda: ec2.create_volume(Size=1, AvailabilityZone=SECOND))["Code"] == "Unsupported"

    args = ["storage", "register", host, "--port", str(port), "--zone", SECOND]
    registered = zones.cloud.run("mallee", *args)
    assert registered.returncode == 0, registered.stderr
    assert f"zone {SECOND}" in registered.stdout
    assert zones.cloud.run("mallee", *args).returncode == 0  # again: nothing changes

    # A volume in the second zone, attached to an instance there, snapshotted.
    (instance,) = ec2.run_instances(
        ImageId=ami, InstanceType="t1.micro", MinCount=1, MaxCount=1, Placement={"AvailabilityZone": SECOND}
    )["Instances"]
    instance_id = instance["InstanceId"]
    volume = ec2.create_volume(Size=1, AvailabilityZone=SECOND)
    assert volume["AvailabilityZone"] == SECOND
    volume_id = volume["VolumeId"]
    in_a = ec2.create_volume(Size=1, AvailabilityZone=FIRST)["VolumeId"]
    wait_state(ec2, [instance_id], "running", timeout=30)
    wait_for(
        "the volumes", lambda: {_volume_state(ec2, v) for v in (volume_id, in_a)} == {"available"}, 20, 0.3
    )
    held = Client(f"http://{host}:{port}", load_key(zones.cc_dir / "deployment.key"))
    assert volume_id in held.call(storage.DESCRIBE, Empty()).volumes  # made by the second zone's SC
    ec2.attach_volume(VolumeId=volume_id, InstanceId=instance_id, Device="/dev/sdf")
    # AWS's answer to an attachment across zones.
    mismatch = _error(lambda: ec2.attach_volume(VolumeId=in_a, InstanceId=instance_id, Device="/dev/sdg"))
    assert (mismatch["Status"], mismatch["Code"]) == (400, "InvalidVolume.ZoneMismatch")
    wait_for(
        "the attachment",
        lambda: (
            [a["State"] for a in ec2.describe_volumes(VolumeIds=[volume_id])["Volumes"][0]["Attachments"]]
            == ["attached"]
        ),
        20,
        0.3,
    )
    assert held.call(storage.DESCRIBE, Empty()).volumes[volume_id].node in zones.nodes_b  # exported there
    snapshot_id = ec2.create_snapshot(VolumeId=volume_id)["SnapshotId"]
    wait_for("the snapshot", lambda: _snapshot_state(ec2, snapshot_id) == "completed", 20, 0.3)

    # Restored in its own zone; another zone's SC cannot read it (each keeps its own part of the
    # snapshot bucket), so a volume there is refused by name rather than made to fail.
    restored = ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone=SECOND)["VolumeId"]
    across = _error(lambda: ec2.create_volume(SnapshotId=snapshot_id, AvailabilityZone=FIRST))
    assert (across["Status"], across["Code"]) == (400, "Unsupported")
    assert snapshot_id in across["Message"] and SECOND in across["Message"]
    wait_for("the restored volume", lambda: _volume_state(ec2, restored) == "available", 20, 0.3)

    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated", timeout=30)
    wait_for("the volume detached", lambda: _volume_state(ec2, volume_id) == "available", 20, 0.3)


def test_a_dead_storage_controller_fails_its_zones_volume_calls_only(
    zones: Zones, account: tuple[Keys, str]
) -> None:
    keys, _ami = account
    ec2 = zones.cloud.client("ec2", keys)
    zones.processes["sc"].send_signal(signal.SIGKILL)
    zones.processes["sc"].wait(10)
    # The other zone carries on while the dead one's heartbeats age.
    in_a = ec2.create_volume(Size=1, AvailabilityZone=FIRST)["VolumeId"]
    wait_for("the first zone's volume", lambda: _volume_state(ec2, in_a) == "available", 20, 0.3)

    api = zones.cloud.admin_api()
    wait_for(
        "the second zone's storage controller not ready",
        lambda: f"sc-{SECOND}" in _not_ready(api),
        25,
        0.5,
    )
    answer = _error(lambda: ec2.create_volume(Size=1, AvailabilityZone=SECOND))
    assert (answer["Status"], answer["Code"]) == (503, "ServiceUnavailable") and SECOND in answer["Message"]
    kept = next(v for v in ec2.describe_volumes()["Volumes"] if v["AvailabilityZone"] == SECOND)
    snapshot = _error(lambda: ec2.create_snapshot(VolumeId=kept["VolumeId"]))
    assert (snapshot["Status"], snapshot["Code"]) == (503, "ServiceUnavailable")
    assert ec2.create_volume(Size=1, AvailabilityZone=FIRST)["AvailabilityZone"] == FIRST
