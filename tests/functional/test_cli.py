"""The `mallee` administrator commands, run as a user would run them."""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Callable
from pathlib import Path

from support.cloud import Cloud, start_cloud, stop_cloud


def test_status_lists_five_enabled_services(cloud: Cloud) -> None:
    result = cloud.run("mallee", "status")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().split("\n\n")[0].splitlines()  # the services; then what they count
    assert lines[0].split() == ["TYPE", "NAME", "ZONE", "HOST", "STATE", "VERSION", "METRICS", "DETAIL"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert set(rows) == {"clc", "walrus", "cc", "sc", "nc"}
    assert all(r[4] == "ENABLED" for r in rows.values())
    assert rows["cc"][2] == "mallee-1a"
    # The node says which hypervisor it chose (the test cloud runs the fake one).
    assert "hypervisor fake" in next(line for line in lines if line.startswith("nc "))
    deadline = time.monotonic() + 15  # the CC reports its node after its first poll
    while "1/1 nodes enabled" not in cloud.run("mallee", "status").stdout:
        assert time.monotonic() < deadline, "the cluster never reported its node"
        time.sleep(0.5)


def test_account_create_then_credentials_profile_works_with_aws_cli(cloud: Cloud) -> None:
    name = f"team-{secrets.token_hex(3)}"
    created = cloud.run("mallee", "account", "create", name)
    assert created.returncode == 0, created.stderr
    account_id = created.stdout.split()[1]
    assert len(account_id) == 12 and account_id.isdigit()
    assert name in cloud.run("mallee", "account", "list").stdout
    wrote = cloud.run("mallee", "credentials", name)
    assert wrote.returncode == 0, wrote.stderr
    ident = cloud.run("aws", "--profile", name, "sts", "get-caller-identity", "--output", "json")
    assert ident.returncode == 0, ident.stderr
    assert json.loads(ident.stdout)["Account"] == account_id
    eucarc = cloud.data_dir / "credentials" / f"{name}.eucarc"
    assert "AWS_ACCESS_KEY_ID=AKIA" in eucarc.read_text()


def test_credentials_for_a_user_of_an_account(cloud: Cloud) -> None:
    name = f"crew-{secrets.token_hex(3)}"
    assert cloud.run("mallee", "account", "create", name).returncode == 0
    assert cloud.run("mallee", "credentials", name).returncode == 0
    made = cloud.run("aws", "--profile", name, "iam", "create-user", "--user-name", "pat")
    assert made.returncode == 0, made.stderr
    wrote = cloud.run("mallee", "credentials", name, "pat")
    assert wrote.returncode == 0, wrote.stderr
    ident = cloud.run("aws", "--profile", f"{name}-pat", "sts", "get-caller-identity", "--output", "json")
    assert json.loads(ident.stdout)["Arn"].endswith(":user/pat")


def test_duplicate_account_is_an_error_not_a_crash(cloud: Cloud) -> None:
    name = f"dup-{secrets.token_hex(3)}"
    assert cloud.run("mallee", "account", "create", name).returncode == 0
    again = cloud.run("mallee", "account", "create", name)
    assert again.returncode == 1 and "EntityAlreadyExists" in again.stderr


def test_instance_type_set_changes_what_describe_shows(cloud: Cloud) -> None:
    changed = cloud.run(
        "mallee", "instance-type", "set", "c1.xlarge", "--cpus", "3", "--memory", "3000", "--disk", "20"
    )
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines()[1].split() == ["c1.xlarge", "3", "3000", "20"]
    shown = cloud.client("ec2").describe_instance_types(InstanceTypes=["c1.xlarge"])["InstanceTypes"][0]
    assert (shown["VCpuInfo"]["DefaultVCpus"], shown["MemoryInfo"]["SizeInMiB"]) == (3, 3000)
    reset = cloud.run("mallee", "instance-type", "set", "c1.xlarge", "--reset")
    assert reset.stdout.splitlines()[1].split() == ["c1.xlarge", "2", "2048", "10"]


def test_instance_type_set_rejects_nonsense(cloud: Cloud) -> None:
    bad = cloud.run("mallee", "instance-type", "set", "m1.small", "--cpus", "0")
    assert bad.returncode == 1 and "InvalidParameterValue" in bad.stderr
    unknown = cloud.run("mallee", "instance-type", "set", "z9.nope", "--cpus", "1")
    assert unknown.returncode == 1 and "InvalidInstanceType" in unknown.stderr


def test_only_the_administrator_may_change_instance_types(cloud: Cloud) -> None:
    keys = cloud.new_account()
    ec2 = cloud.client("ec2", keys)
    import pytest
    from botocore.credentials import ReadOnlyCredentials

    from mallee.cli.client import AdminClient, ApiError

    outsider = AdminClient(
        ReadOnlyCredentials(keys.access_key_id, keys.secret_access_key, None), cloud.endpoint, cloud.region
    )
    with pytest.raises(ApiError) as err:
        outsider.call("ec2", "ModifyInstanceTypeAttribute", {"Name": "m1.small", "Cpu": "8"})
    assert err.value.code == "UnauthorizedOperation"
    assert (
        ec2.describe_instance_types(InstanceTypes=["m1.small"])["InstanceTypes"][0]["VCpuInfo"][
            "DefaultVCpus"
        ]
        == 1
    )


def test_node_register_adds_capacity_to_the_zone(tmp_path: Path) -> None:
    """A node controller registered with `mallee node register` adds its resources to the zone.
    (Its own cloud: the shared one must keep a single node for the other tests.)"""
    cloud = start_cloud(tmp_path)
    try:
        _register_and_check(cloud)
    finally:
        stop_cloud(cloud)


def _register_and_check(cloud: Cloud) -> None:

    def most_small() -> int:
        zones = cloud.client("ec2").describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
        row = next(z for z in zones if z["ZoneName"] == "|- m1.small")
        return int(row["State"].split()[2])

    def wait(condition: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 20
        while not condition():
            assert time.monotonic() < deadline, what
            time.sleep(0.5)

    wait(lambda: most_small() > 0, "the first node's capacity never showed")
    before = most_small()
    # This host's node controller once more under another name: the CC counts it as a second node.
    nc_port = re.findall(r"nc-127\.0\.0\.1\s+\S+\s+127\.0\.0\.1:(\d+)", cloud.run("mallee", "status").stdout)[
        0
    ]
    registered = cloud.run("mallee", "node", "register", "localhost", "--port", nc_port)
    assert registered.returncode == 0, registered.stderr
    wait(lambda: most_small() == 2 * before, "the registered node's capacity never showed")
