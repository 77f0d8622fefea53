"""The metadata service's answers for a running instance, as its node asks the CLC for them (the
rpc a guest's GET of 169.254.169.254 turns into): the versions listed at `/`, each dated version
serving only what existed then, and the keys cloud-init reads; and whether a guest's IMDSv2 token
PUT may be answered, with what hop limit. (The guest's side — the node's proxy issuing tokens, the
hop limit as the answer's IP TTL — is tested in tests/unit/node and end to end in tests/e2e.)"""

from __future__ import annotations

import base64
import json
import pathlib
import subprocess
from typing import Any

import pytest

from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.rpc import cloud as cloud_rpc
from mallee.rpc.transport import Client, load_key
from support.cloud import Cloud, Keys

USER_DATA = "#cloud-config\nwrite_files: []\n"


@pytest.fixture(scope="module")
def launched(cloud: Cloud) -> tuple[Cloud, dict[str, Any], Client]:
    """One instance with a key pair and user-data, running (fake hypervisor), and an rpc client
    holding the deployment key, as a node has."""
    account: Keys = cloud.new_account()
    ami = register_tiny_image(cloud, account)
    ec2 = cloud.client("ec2", account)
    ec2.create_key_pair(KeyName="meta")
    launched = ec2.run_instances(
        ImageId=ami, InstanceType="m1.small", MinCount=1, MaxCount=1, KeyName="meta", UserData=USER_DATA
    )["Instances"][0]
    instance = wait_state(ec2, [launched["InstanceId"]], "running")[0]
    client = Client(cloud.endpoint, load_key(cloud.data_dir / "deployment.key"))
    return cloud, instance, client


def get(launched: tuple[Cloud, dict[str, Any], Client], path: str) -> tuple[int, str]:
    _, instance, client = launched
    request = cloud_rpc.MetadataRequest(
        private_ip=instance["PrivateIpAddress"], path=path, vpc_id=instance["VpcId"]
    )
    answer = client.call(cloud_rpc.METADATA, request)
    return answer.status, answer.body.decode()


def token(launched: tuple[Cloud, dict[str, Any], Client], instance: dict[str, Any]) -> tuple[int, int]:
    """(status, hop limit) the CLC answers the node asking whether `instance` may have a token."""
    request = cloud_rpc.MetadataRequest(
        private_ip=instance["PrivateIpAddress"],
        path="/latest/api/token",
        vpc_id=instance["VpcId"],
        token_request=True,
    )
    answer = launched[2].call(cloud_rpc.METADATA, request)
    return answer.status, answer.hop_limit


def test_every_version_is_listed_oldest_first_with_latest_last(launched: Any) -> None:
    status, body = get(launched, "/")
    versions = body.split("\n")
    assert status == 200 and versions[0] == "1.0" and versions[-1] == "latest"
    assert {"2009-04-04", "2018-09-24", "2021-03-23"} <= set(versions)
    assert versions[:-1] == sorted(versions[:-1])
    for version in versions:  # each one answers
        assert get(launched, f"/{version}/meta-data/instance-id")[0] == 200
    assert get(launched, "/2099-01-01/meta-data/instance-id")[0] == 404


def test_a_dated_version_serves_what_existed_then(launched: Any) -> None:
    _, instance, _ = launched
    assert get(launched, "/1.0/") == (200, "meta-data\nuser-data")  # no dynamic/ before 2009-04-04
    assert get(launched, "/1.0/dynamic/instance-identity/document")[0] == 404
    old = get(launched, "/1.0/meta-data/")[1].split("\n")
    assert "ami-id" in old and "instance-id" in old and "reservation-id" in old
    assert not {"instance-type", "placement/", "mac", "network/", "services/"} & set(old)
    assert get(launched, "/2007-08-29/meta-data/instance-type") == (200, "m1.small")
    assert get(launched, "/2008-02-01/meta-data/placement/") == (200, "availability-zone")
    assert (
        get(launched, "/latest/meta-data/placement/region")[1]
        == instance["Placement"]["AvailabilityZone"][:-1]
    )
    assert get(launched, "/2011-01-01/meta-data/mac")[1] == instance["NetworkInterfaces"][0]["MacAddress"]
    assert get(launched, "/2014-02-25/meta-data/services/") == (200, "domain")
    assert get(launched, "/2015-10-20/meta-data/services/partition") == (200, "aws")
    assert get(launched, "/2018-09-24/meta-data/instance-life-cycle")[0] == 404
    assert get(launched, "/2021-03-23/meta-data/instance-life-cycle") == (200, "on-demand")
    # Parts worked out only when asked for are listed when present, and only then.
    latest = get(launched, "/latest/meta-data/")[1].split("\n")
    assert {"block-device-mapping/", "network/", "public-keys/", "security-groups"} <= set(latest)
    assert "iam/" not in latest and "tags/" not in latest  # no instance profile; tags not enabled
    assert get(launched, "/latest/meta-data/iam/info")[0] == 404


def test_what_cloud_init_reads(launched: Any) -> None:
    _, instance, _ = launched
    mac = instance["NetworkInterfaces"][0]["MacAddress"]
    base = f"/2021-03-23/meta-data/network/interfaces/macs/{mac}"
    assert get(launched, "/2021-03-23/meta-data/network/interfaces/macs/") == (200, f"{mac}/")
    assert get(launched, f"{base}/local-ipv4s") == (200, instance["PrivateIpAddress"])
    assert get(launched, f"{base}/subnet-id") == (200, instance["SubnetId"])
    assert get(launched, f"{base}/vpc-id") == (200, instance["VpcId"])
    cidr = get(launched, f"{base}/subnet-ipv4-cidr-block")[1]
    assert cidr.count(".") == 3 and "/" in cidr
    assert get(launched, f"{base}/vpc-ipv4-cidr-blocks")[1] == get(launched, f"{base}/vpc-ipv4-cidr-block")[1]
    assert (
        get(launched, "/2016-04-19/meta-data/network/interfaces/macs/" + mac + "/vpc-ipv4-cidr-blocks")[0]
        == 404
    )
    assert get(launched, "/2021-03-23/meta-data/public-keys/") == (200, "0=meta")
    assert get(launched, "/2021-03-23/meta-data/public-keys/0/openssh-key")[1].startswith("ssh-rsa ")
    assert get(launched, "/2021-03-23/user-data") == (200, USER_DATA)
    document = json.loads(get(launched, "/2021-03-23/dynamic/instance-identity/document")[1])
    assert document["instanceId"] == instance["InstanceId"]
    assert document["privateIp"] == instance["PrivateIpAddress"]


def test_an_address_that_is_no_instance_gets_nothing(launched: Any) -> None:
    cloud, instance, client = launched
    request = cloud_rpc.MetadataRequest(private_ip="10.255.255.254", path="/", vpc_id=instance["VpcId"])
    assert client.call(cloud_rpc.METADATA, request).status == 404
    other_vpc = cloud_rpc.MetadataRequest(
        private_ip=instance["PrivateIpAddress"],
        path="/latest/meta-data/instance-id",
        vpc_id="vpc-0000000000000000a",
    )
    assert client.call(cloud_rpc.METADATA, other_vpc).status == 404


def test_a_token_is_allowed_with_ec2s_default_hop_limit_of_one(launched: Any) -> None:
    assert token(launched, launched[1]) == (200, 1)


def test_a_token_is_allowed_with_the_instances_hop_limit_and_refused_while_the_endpoint_is_disabled(
    launched: Any,
) -> None:
    cloud = launched[0]
    account: Keys = cloud.new_account()
    ec2 = cloud.client("ec2", account)
    started = ec2.run_instances(
        ImageId=register_tiny_image(cloud, account),
        InstanceType="m1.small",
        MinCount=1,
        MaxCount=1,
        MetadataOptions={"HttpPutResponseHopLimit": 2},
    )["Instances"][0]
    instance = wait_state(ec2, [started["InstanceId"]], "running")[0]
    assert token(launched, instance) == (200, 2)
    ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpPutResponseHopLimit=64)
    assert token(launched, instance) == (200, 64)
    ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpEndpoint="disabled")
    assert token(launched, instance)[0] == 403
    ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpEndpoint="enabled")
    assert token(launched, instance) == (200, 64)
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    wait_state(ec2, [instance["InstanceId"]], "terminated")
    assert token(launched, instance)[0] == 404


def test_a_token_for_an_address_that_is_no_instance_is_refused(launched: Any) -> None:
    instance = launched[1]
    assert token(launched, {**instance, "PrivateIpAddress": "10.255.255.254"})[0] == 404
    assert token(launched, {**instance, "VpcId": "vpc-0000000000000000a"})[0] == 404


def test_the_identity_document_is_signed_by_the_cloud_certificate(
    launched: Any, tmp_path: pathlib.Path
) -> None:
    """Checked as the docstring of services/clc/identity_document.py says, with openssl itself."""
    cloud = launched[0]
    listing = get(launched, "/latest/dynamic/instance-identity/")[1].split("\n")
    assert set(listing) == {"document", "pkcs7", "rsa2048", "signature"}
    document = get(launched, "/latest/dynamic/instance-identity/document")[1]
    (tmp_path / "document").write_text(document)
    for name in ("signature", "pkcs7"):
        status, text = get(launched, f"/latest/dynamic/instance-identity/{name}")
        assert status == 200 and all(len(line) <= 64 for line in text.split("\n"))
        (tmp_path / f"{name}.bin").write_bytes(base64.b64decode(text))
    cert = cloud.data_dir / "cloud-cert.pem"
    pub = subprocess.run(["openssl", "x509", "-pubkey", "-noout", "-in", str(cert)], check=True,
                         capture_output=True).stdout  # fmt: skip
    (tmp_path / "cloud.pub").write_bytes(pub)

    def verified(document_file: pathlib.Path) -> bool:
        dgst = ["openssl", "dgst", "-sha256", "-verify", str(tmp_path / "cloud.pub"),
                "-signature", str(tmp_path / "signature.bin"), str(document_file)]  # fmt: skip
        smime = ["openssl", "smime", "-verify", "-binary", "-inform", "DER",
                 "-in", str(tmp_path / "pkcs7.bin"), "-content", str(document_file),
                 "-certfile", str(cert), "-noverify"]  # fmt: skip
        results = [subprocess.run(command, capture_output=True).returncode == 0 for command in (dgst, smime)]
        assert results[0] == results[1], results
        return results[0]

    assert verified(tmp_path / "document")
    (tmp_path / "changed").write_text(document.replace(launched[1]["InstanceId"], "i-0123456789abcdef0"))
    assert not verified(tmp_path / "changed")
