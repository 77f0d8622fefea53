"""`mallee up` stopped and started under running instances keeps them (and says so when it stops);
`mallee down` ends them and removes the node's VMs, network wiring and files. On the fake drivers,
whose "VMs" live on disk like real ones; tests/e2e does the same with real VMs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from functional.test_ec2_instances import register_tiny_image, wait_state
from support.cloud import mallee_down, start_cloud, stop_cloud


def _vms(node_dir: Path) -> list[str]:
    state = node_dir / "fake-host.json"
    return sorted(json.loads(state.read_text())) if state.exists() else []


def test_instances_outlive_a_restart_and_mallee_down_ends_them(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    base = tmp_path_factory.mktemp("updown")
    cloud = start_cloud(base)
    try:
        keys = cloud.new_account("updown")
        ec2 = cloud.client("ec2", keys)
        ami = register_tiny_image(cloud, keys)
        ids = [i["InstanceId"] for i in ec2.run_instances(ImageId=ami, MinCount=2, MaxCount=2)["Instances"]]
        wait_state(ec2, ids, "running")
        node_dir = Path(cloud.env["MALLEE_NODE_DIR"])
        assert _vms(node_dir) == sorted(ids)

        assert stop_cloud(cloud) == 0
        said = cloud.log().split("leaves running")[-1]
        assert all(i in said for i in ids), "mallee up did not say what it leaves running"
        assert _vms(node_dir) == sorted(ids)  # the VMs did not stop with the cloud

        cloud = start_cloud(base, port_base=cloud.port_base)
        ec2 = cloud.client("ec2", keys)
        wait_state(ec2, ids, "running")
        refused = cloud.run("mallee", "down")  # no terminal, no --yes: nothing is done
        assert refused.returncode == 1 and "--yes" in refused.stderr and _vms(node_dir) == sorted(ids)

        down = mallee_down(cloud, "--yes")
        assert down.returncode == 0, down.stdout + down.stderr
        assert "stopped mallee up" in down.stdout, down.stdout + down.stderr
        assert cloud.process.wait(timeout=60) == 0
        assert _vms(node_dir) == [] and not any(node_dir.iterdir())
    finally:
        stop_cloud(cloud)
    cloud = start_cloud(
        base, port_base=cloud.port_base
    )  # the data directory was kept: the same cloud, its instances ended
    try:
        ec2 = cloud.client("ec2", keys)
        states = {
            i["InstanceId"]: i["State"]["Name"]
            for r in ec2.describe_instances()["Reservations"]
            for i in r["Instances"]
        }
        assert states == {i: "terminated" for i in ids}
    finally:
        stop_cloud(cloud)
