"""The instance life cycle through the EC2 API: RunInstances → the CC places it → the NC launches it
(fetching its images from Walrus through presigned URLs) → running → terminate → terminated.

These run the node controller on its fake hypervisor and network drivers (the API and control
plane are what is tested here); tests/e2e boots real VMs."""

from __future__ import annotations

import base64
import gzip
import ipaddress
import secrets
import time
from typing import Any

import pytest
from botocore.config import Config as BotoConfig
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from support.answers import code
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL


def register_tiny_image(cloud: Cloud, keys: Keys, public: bool = False) -> str:
    """Upload a small kernel, ramdisk and root file system and register them (aki, ari, ami)."""
    s3, ec2 = cloud.client("s3", keys), cloud.client("ec2", keys)
    bucket = f"img-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="vmlinux", Body=b"\x7fELF" + b"\0" * 4092)
    s3.put_object(Bucket=bucket, Key="initrd.img", Body=gzip.compress(b"initramfs" * 100))
    s3.put_object(Bucket=bucket, Key="rootfs.img", Body=b"\0" * 65536)
    aki = ec2.register_image(Name=f"k-{bucket}", ImageLocation=f"{bucket}/vmlinux", Architecture="x86_64")[
        "ImageId"
    ]
    ari = ec2.register_image(Name=f"r-{bucket}", ImageLocation=f"{bucket}/initrd.img", Architecture="x86_64")[
        "ImageId"
    ]
    ami = ec2.register_image(
        Name=f"m-{bucket}",
        ImageLocation=f"{bucket}/rootfs.img",
        Architecture="x86_64",
        KernelId=aki,
        RamdiskId=ari,
    )["ImageId"]
    assert (aki[:4], ari[:4], ami[:4]) == ("aki-", "ari-", "ami-")
    if public:
        for image_id in (aki, ari, ami):
            ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    return ami


def wait_state(ec2: Any, instance_ids: list[str], state: str, timeout: float = 30) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    while True:
        found = [
            i
            for r in ec2.describe_instances(InstanceIds=instance_ids)["Reservations"]
            for i in r["Instances"]
        ]
        if all(i["State"]["Name"] == state for i in found):
            return found
        assert time.monotonic() < deadline, f"still {[i['State']['Name'] for i in found]}, wanted {state}"
        time.sleep(0.5)


def test_run_describe_terminate(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    ec2.create_key_pair(KeyName="k1")
    user_data = "#!/bin/sh\necho hello\n"
    reservation = ec2.run_instances(
        ImageId=ami,
        InstanceType="m1.small",
        MinCount=1,
        MaxCount=1,
        KeyName="k1",
        UserData=user_data,
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "role", "Value": "web"}]}],
    )
    instance = reservation["Instances"][0]
    assert reservation["ReservationId"].startswith("r-") and reservation["OwnerId"] == account.account_id
    assert instance["State"]["Name"] == "pending" and instance["InstanceId"].startswith("i-")
    assert ipaddress.ip_address(instance["PrivateIpAddress"]) in ipaddress.ip_network("172.31.0.0/16")
    assert instance["Tags"] == [{"Key": "role", "Value": "web"}]
    running = wait_state(ec2, [instance["InstanceId"]], "running")[0]
    assert running["KeyName"] == "k1" and running["Placement"]["AvailabilityZone"] == "mallee-1a"
    attr = ec2.describe_instance_attribute(InstanceId=instance["InstanceId"], Attribute="userData")
    assert base64.b64decode(attr["UserData"]["Value"]).decode() == user_data
    tagged = ec2.describe_instances(Filters=[{"Name": "tag:role", "Values": ["web"]}])["Reservations"]
    assert [i["InstanceId"] for r in tagged for i in r["Instances"]] == [instance["InstanceId"]]
    statuses = ec2.describe_instance_status(InstanceIds=[instance["InstanceId"]])["InstanceStatuses"]
    assert statuses[0]["InstanceState"]["Name"] == "running"
    changes = ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])["TerminatingInstances"]
    assert (
        changes[0]["PreviousState"]["Name"] == "running"
        and changes[0]["CurrentState"]["Name"] == "shutting-down"
    )
    wait_state(ec2, [instance["InstanceId"]], "terminated")
    again = ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])["TerminatingInstances"]
    assert again[0]["CurrentState"]["Name"] == "terminated"  # idempotent


def test_min_and_max_count_and_client_token(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    token = secrets.token_hex(8)
    first = ec2.run_instances(ImageId=ami, InstanceType="t1.micro", MinCount=2, MaxCount=2, ClientToken=token)
    second = ec2.run_instances(
        ImageId=ami, InstanceType="t1.micro", MinCount=2, MaxCount=2, ClientToken=token
    )
    assert first["ReservationId"] == second["ReservationId"]
    ids_ = sorted(i["InstanceId"] for i in first["Instances"])
    assert ids_ == sorted(i["InstanceId"] for i in second["Instances"]) and len(ids_) == 2
    assert sorted(i["AmiLaunchIndex"] for i in first["Instances"]) == [0, 1]
    ec2.terminate_instances(InstanceIds=ids_)
    wait_state(ec2, ids_, "terminated")


def test_nothing_is_half_launched_when_min_count_cannot_fit(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    with pytest.raises(ClientError) as err:
        ec2.run_instances(ImageId=ami, InstanceType="hs1.8xlarge", MinCount=1, MaxCount=1)
    assert code(err) == "InsufficientInstanceCapacity"
    assert ec2.describe_instances()["Reservations"] == []


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"ImageId": "ami-0123456789abcdef0"}, "InvalidAMIID.NotFound"),
        ({"ImageId": "ami-nothex"}, "InvalidAMIID.Malformed"),
        ({"InstanceType": "z9.mega"}, "InvalidParameterValue"),
        ({"KeyName": "no-such-key"}, "InvalidKeyPair.NotFound"),
        ({"UserData": "x" * (16 * 1024 + 1)}, "InvalidParameterValue"),
        ({"SecurityGroups": ["web"]}, "InvalidGroup.NotFound"),
        ({"SecurityGroupIds": ["sg-0123456789abcdef0"]}, "InvalidGroup.NotFound"),
        ({"SubnetId": "subnet-0123456789abcdef0"}, "InvalidSubnetID.NotFound"),
        ({"PrivateIpAddress": "10.99.0.10"}, "InvalidParameterValue"),
        ({"Ipv6AddressCount": 1}, "UnsupportedOperation"),
    ],
)
def test_bad_run_instances_input(cloud: Cloud, account: Keys, params: dict[str, Any], expected: str) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client(
        "ec2", account, config=BotoConfig(parameter_validation=False, retries={"max_attempts": 1})
    )
    with pytest.raises(ClientError) as err:
        ec2.run_instances(**{"ImageId": ami, "MinCount": 1, "MaxCount": 1, **params})
    assert code(err) == expected


def test_another_accounts_private_image_is_not_found(cloud: Cloud, account: Keys) -> None:
    other = cloud.new_account("owner")
    ami = register_tiny_image(cloud, other)
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", account).run_instances(ImageId=ami, MinCount=1, MaxCount=1)
    assert code(err) == "InvalidAMIID.NotFound"


def test_public_image_launches_for_everyone(cloud: Cloud, account: Keys) -> None:
    other = cloud.new_account("publisher")
    ami = register_tiny_image(cloud, other, public=True)
    ec2 = cloud.client("ec2", account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    wait_state(ec2, [instance_id], "running")
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_unknown_and_malformed_instance_ids(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    with pytest.raises(ClientError) as err:
        ec2.describe_instances(InstanceIds=["i-0123456789abcdef0"])
    assert code(err) == "InvalidInstanceID.NotFound"
    with pytest.raises(ClientError) as err:
        ec2.terminate_instances(InstanceIds=["i-zzz"])
    assert code(err) == "InvalidInstanceID.Malformed"


def test_instance_store_instances_cannot_stop(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    with pytest.raises(ClientError) as err:
        ec2.stop_instances(InstanceIds=[instance_id])
    assert code(err) == "UnsupportedOperation"
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_termination_protection(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    instance_id = ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, DisableApiTermination=True)[
        "Instances"
    ][0]["InstanceId"]
    with pytest.raises(ClientError) as err:
        ec2.terminate_instances(InstanceIds=[instance_id])
    assert code(err) == "OperationNotPermitted"
    ec2.modify_instance_attribute(InstanceId=instance_id, DisableApiTermination={"Value": False})
    ec2.terminate_instances(InstanceIds=[instance_id])
    wait_state(ec2, [instance_id], "terminated")


def test_one_account_never_sees_anothers_instances(cloud: Cloud, account: Keys) -> None:
    ami = register_tiny_image(cloud, account)
    instance_id = cloud.client("ec2", account).run_instances(ImageId=ami, MinCount=1, MaxCount=1)[
        "Instances"
    ][0]["InstanceId"]
    other = cloud.client("ec2", cloud.new_account("peeker"))
    assert other.describe_instances()["Reservations"] == []
    with pytest.raises(ClientError) as err:
        other.terminate_instances(InstanceIds=[instance_id])
    assert code(err) == "InvalidInstanceID.NotFound"
    cloud.client("ec2", account).terminate_instances(InstanceIds=[instance_id])
