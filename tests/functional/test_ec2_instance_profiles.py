"""EC2's side of instance identity, through boto3 and the aws CLI: an instance profile given at
launch (by name or ARN) and associated, replaced and disassociated later; metadata options at
launch and ModifyInstanceMetadataOptions, shown by DescribeInstances and enforced by the metadata
service (asked as a node asks it: tests/functional/test_instance_metadata.py)."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from functional.test_ec2_instances import register_tiny_image, wait_state
from mallee.rpc import cloud as cloud_rpc
from mallee.rpc.transport import Client, load_key
from support.answers import code
from support.cloud import Cloud, Keys, aws, user_keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

TRUST = {
    "Version": "2012-10-17",
    "Statement": [
        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
    ],
}


def profile(iam: Any, name: str) -> dict[str, Any]:
    iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(TRUST))
    created: dict[str, Any] = iam.create_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return created


def launch(cloud: Cloud, account: Keys, **params: Any) -> dict[str, Any]:
    ec2 = cloud.client("ec2", account)
    ami = register_tiny_image(cloud, account)
    started = ec2.run_instances(ImageId=ami, InstanceType="m1.small", MinCount=1, MaxCount=1, **params)
    return wait_state(ec2, [started["Instances"][0]["InstanceId"]], "running")[0]


def describe(ec2: Any, instance_id: str) -> dict[str, Any]:
    found: dict[str, Any] = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][
        0
    ]
    return found


def metadata(cloud: Cloud, instance: dict[str, Any], path: str, with_token: bool) -> tuple[int, str]:
    client = Client(cloud.endpoint, load_key(cloud.data_dir / "deployment.key"))
    request = cloud_rpc.MetadataRequest(
        private_ip=instance["PrivateIpAddress"], path=path, vpc_id=instance["VpcId"], with_token=with_token
    )
    answer = client.call(cloud_rpc.METADATA, request)
    return answer.status, answer.body.decode()


def test_a_profile_given_at_launch_is_shown_and_can_be_replaced_and_taken_away(
    cloud: Cloud, account: Keys
) -> None:
    iam, ec2 = cloud.client("iam", account), cloud.client("ec2", account)
    first, second = profile(iam, "web"), profile(iam, "batch")
    instance = launch(cloud, account, IamInstanceProfile={"Name": "web"})
    assert instance["IamInstanceProfile"] == {"Arn": first["Arn"], "Id": first["InstanceProfileId"]}
    found = ec2.describe_iam_instance_profile_associations(
        Filters=[{"Name": "instance-id", "Values": [instance["InstanceId"]]}]
    )["IamInstanceProfileAssociations"]
    assert [(a["State"], a["IamInstanceProfile"]["Arn"]) for a in found] == [("associated", first["Arn"])]
    association = found[0]["AssociationId"]
    assert association.startswith("iip-assoc-")

    with pytest.raises(ClientError) as err:  # one association per instance
        ec2.associate_iam_instance_profile(
            IamInstanceProfile={"Name": "batch"}, InstanceId=instance["InstanceId"]
        )
    assert code(err) == "IncorrectState"
    replaced = ec2.replace_iam_instance_profile_association(
        IamInstanceProfile={"Arn": second["Arn"]}, AssociationId=association
    )["IamInstanceProfileAssociation"]
    assert replaced["IamInstanceProfile"]["Arn"] == second["Arn"] and replaced["AssociationId"] != association
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][
        0
    ]
    assert described["IamInstanceProfile"]["Arn"] == second["Arn"]

    gone = ec2.disassociate_iam_instance_profile(AssociationId=replaced["AssociationId"])
    assert gone["IamInstanceProfileAssociation"]["State"] == "disassociating"
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][
        0
    ]
    assert "IamInstanceProfile" not in described
    with pytest.raises(ClientError) as err:
        ec2.disassociate_iam_instance_profile(AssociationId=replaced["AssociationId"])
    assert code(err) == "InvalidAssociationID.NotFound"

    # And back, with the aws CLI, by ARN.
    again = aws(cloud, "ec2", "associate-iam-instance-profile", "--instance-id", instance["InstanceId"],
                "--iam-instance-profile", f"Arn={first['Arn']}", keys=account)  # fmt: skip
    assert again["IamInstanceProfileAssociation"]["State"] == "associating"
    listed = aws(cloud, "ec2", "describe-iam-instance-profile-associations", keys=account)
    assert [a["InstanceId"] for a in listed["IamInstanceProfileAssociations"]] == [instance["InstanceId"]]


def test_profiles_that_are_not_the_callers_are_refused(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    other = cloud.new_account()
    theirs = profile(cloud.client("iam", other), "theirs")
    ami = register_tiny_image(cloud, account)
    for spec in ({"Name": "nothing-here"}, {"Arn": theirs["Arn"]}, {"Name": "theirs"}):
        with pytest.raises(ClientError) as err:
            ec2.run_instances(ImageId=ami, MinCount=1, MaxCount=1, IamInstanceProfile=spec)
        assert code(err) == "InvalidParameterValue", spec
    assert ec2.describe_instances()["Reservations"] == []  # nothing was launched


def test_metadata_options_are_recorded_shown_and_enforced(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    instance = launch(
        cloud,
        account,
        MetadataOptions={
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": 2,
            "InstanceMetadataTags": "enabled",
        },
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "Name", "Value": "web-1"}]}],
    )
    assert instance["MetadataOptions"] == {
        "State": "applied",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 2,
        "HttpEndpoint": "enabled",
        "HttpProtocolIpv6": "disabled",
        "InstanceMetadataTags": "enabled",
    }
    path = "/latest/meta-data/instance-id"
    assert metadata(cloud, instance, path, with_token=False) == (401, "Unauthorized")
    assert metadata(cloud, instance, path, with_token=True) == (200, instance["InstanceId"])
    assert metadata(cloud, instance, "/latest/meta-data/tags/instance/", True) == (200, "Name")
    assert metadata(cloud, instance, "/latest/meta-data/tags/instance/Name", True) == (200, "web-1")
    assert metadata(cloud, instance, "/2018-09-24/meta-data/tags/instance/Name", True)[0] == 404  # came 2021

    changed = aws(cloud, "ec2", "modify-instance-metadata-options", "--instance-id",
                  instance["InstanceId"], "--http-tokens", "optional",
                  "--instance-metadata-tags", "disabled", keys=account)  # fmt: skip
    assert changed["InstanceMetadataOptions"]["HttpTokens"] == "optional"
    assert metadata(cloud, instance, path, with_token=False) == (200, instance["InstanceId"])
    assert metadata(cloud, instance, "/latest/meta-data/tags/instance/Name", False)[0] == 404
    ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], HttpEndpoint="disabled")
    assert metadata(cloud, instance, path, with_token=True) == (403, "Forbidden")
    described = ec2.describe_instances(InstanceIds=[instance["InstanceId"]])["Reservations"][0]["Instances"][
        0
    ]
    assert described["MetadataOptions"]["HttpEndpoint"] == "disabled"
    assert described["MetadataOptions"]["HttpPutResponseHopLimit"] == 2  # kept

    for bad, expected in (
        ({"HttpTokens": "sometimes"}, "InvalidParameterValue"),
        ({"HttpProtocolIpv6": "enabled"}, "UnsupportedOperation"),
    ):
        with pytest.raises(ClientError) as err:
            ec2.modify_instance_metadata_options(InstanceId=instance["InstanceId"], **bad)
        assert code(err) == expected, bad
    with pytest.raises(ClientError) as err:
        ec2.modify_instance_metadata_options(InstanceId="i-0123456789abcdef0", HttpTokens="required")
    assert code(err) == "InvalidInstanceID.NotFound"


def test_instance_profiles_and_metadata_options_with_the_aws_cli(cloud: Cloud, account: Keys) -> None:
    iam, ec2 = cloud.client("iam", account), cloud.client("ec2", account)
    web, batch = profile(iam, "web"), profile(iam, "batch")
    started = aws(
        cloud, "ec2", "run-instances", "--image-id", register_tiny_image(cloud, account),
        "--instance-type", "m1.small", "--count", "2", "--iam-instance-profile", "Name=web",
        "--metadata-options", "HttpTokens=required,HttpPutResponseHopLimit=2,InstanceMetadataTags=enabled",
        keys=account,
    )  # fmt: skip
    web_shown = {"Arn": web["Arn"], "Id": web["InstanceProfileId"]}
    assert [i["IamInstanceProfile"] for i in started["Instances"]] == [web_shown, web_shown]
    first, second = (i["InstanceId"] for i in started["Instances"])
    wait_state(ec2, [first, second], "running")

    (instance,) = aws(cloud, "ec2", "describe-instances", "--instance-ids", first, keys=account)[
        "Reservations"
    ][0]["Instances"]
    assert instance["IamInstanceProfile"] == web_shown
    assert instance["MetadataOptions"] == {
        "State": "applied",
        "HttpTokens": "required",
        "HttpPutResponseHopLimit": 2,
        "HttpEndpoint": "enabled",
        "HttpProtocolIpv6": "disabled",
        "InstanceMetadataTags": "enabled",
    }
    associations = aws(cloud, "ec2", "describe-iam-instance-profile-associations", "--filters",
                       f"Name=instance-id,Values={first}", keys=account)  # fmt: skip
    (found,) = associations["IamInstanceProfileAssociations"]
    assert found["AssociationId"].startswith("iip-assoc-") and found["Timestamp"]
    assert (found["InstanceId"], found["IamInstanceProfile"], found["State"]) == (
        first,
        web_shown,
        "associated",
    )

    replaced = aws(cloud, "ec2", "replace-iam-instance-profile-association", "--association-id",
                   found["AssociationId"], "--iam-instance-profile", f"Arn={batch['Arn']}",
                   keys=account)["IamInstanceProfileAssociation"]  # fmt: skip
    batch_shown = {"Arn": batch["Arn"], "Id": batch["InstanceProfileId"]}
    assert (replaced["InstanceId"], replaced["IamInstanceProfile"], replaced["State"]) == (
        first,
        batch_shown,
        "associating",
    )
    assert replaced["AssociationId"] != found["AssociationId"]
    gone = aws(cloud, "ec2", "disassociate-iam-instance-profile", "--association-id",
               replaced["AssociationId"], keys=account)["IamInstanceProfileAssociation"]  # fmt: skip
    assert (gone["AssociationId"], gone["IamInstanceProfile"], gone["State"]) == (
        replaced["AssociationId"],
        batch_shown,
        "disassociating",
    )
    assert "IamInstanceProfile" not in describe(ec2, first)
    assert describe(ec2, second)["IamInstanceProfile"] == web_shown  # the other instance keeps its own


def test_an_instance_launched_without_options_has_ec2s_defaults(cloud: Cloud, account: Keys) -> None:
    instance = launch(cloud, account)
    assert instance["MetadataOptions"]["HttpTokens"] == "optional"
    assert instance["MetadataOptions"]["HttpEndpoint"] == "enabled"
    assert "IamInstanceProfile" not in instance
    assert metadata(cloud, instance, "/latest/meta-data/instance-id", with_token=False)[0] == 200
    assert metadata(cloud, instance, "/latest/meta-data/tags/instance/", with_token=False)[0] == 404


def role_keys(document: str) -> Keys:
    found = json.loads(document)
    assert found["Code"] == "Success" and found["Type"] == "AWS-HMAC", found
    return Keys(found["AccessKeyId"], found["SecretAccessKey"], found["Token"])


def test_an_instance_reads_its_roles_credentials_and_they_do_what_the_role_allows(
    cloud: Cloud, account: Keys
) -> None:
    iam, s3 = cloud.client("iam", account), cloud.client("s3", account)
    created = profile(iam, "reader")
    read_only = {"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["s3:ListAllMyBuckets", "s3:GetObject"], "Resource": "*"}]}  # fmt: skip
    iam.put_role_policy(RoleName="reader", PolicyName="read", PolicyDocument=json.dumps(read_only))
    bucket = f"data-{account.account_id}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="k", Body=b"v")
    instance = launch(cloud, account, IamInstanceProfile={"Arn": created["Arn"]})

    status, info = metadata(cloud, instance, "/latest/meta-data/iam/info", with_token=False)
    assert status == 200 and json.loads(info)["InstanceProfileArn"] == created["Arn"]
    assert metadata(cloud, instance, "/latest/meta-data/iam/security-credentials/", True) == (200, "reader")
    path = "/latest/meta-data/iam/security-credentials/reader"
    v1, v2 = metadata(cloud, instance, path, False), metadata(cloud, instance, path, True)
    assert v1[0] == v2[0] == 200 and role_keys(v1[1]) == role_keys(v2[1])  # kept, not made per read
    keys = role_keys(v1[1])
    assert keys.access_key_id.startswith("ASIA")

    # From the host, against the public endpoint: what the role allows, and nothing else.
    who = cloud.client("sts", keys).get_caller_identity()
    assert who["Arn"] == f"arn:aws:sts::{account.account_id}:assumed-role/reader/{instance['InstanceId']}"
    as_role = cloud.client("s3", keys)
    assert bucket in [b["Name"] for b in as_role.list_buckets()["Buckets"]]
    assert as_role.get_object(Bucket=bucket, Key="k")["Body"].read() == b"v"
    with pytest.raises(ClientError) as err:
        as_role.put_object(Bucket=bucket, Key="k", Body=b"changed")
    assert code(err) == "AccessDenied"
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", keys).describe_instances()
    assert code(err) == "UnauthorizedOperation"

    # Rotation: once less than 15 minutes are left, the next read gets new keys.
    soon = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    cloud.set_key_expiry(keys.access_key_id, soon)
    rotated = role_keys(metadata(cloud, instance, path, False)[1])
    assert rotated.access_key_id != keys.access_key_id
    assert json.loads(metadata(cloud, instance, path, False)[1])["AccessKeyId"] == rotated.access_key_id

    # Disassociated: the metadata service no longer serves them.
    association = cloud.client("ec2", account).describe_iam_instance_profile_associations()[
        "IamInstanceProfileAssociations"
    ]
    mine = [a["AssociationId"] for a in association if a["InstanceId"] == instance["InstanceId"]]
    cloud.client("ec2", account).disassociate_iam_instance_profile(AssociationId=mine[0])
    assert metadata(cloud, instance, "/latest/meta-data/iam/", False)[0] == 404
    assert metadata(cloud, instance, path, True)[0] == 404


def test_a_role_ec2_may_not_assume_gives_no_credentials(cloud: Cloud, account: Keys) -> None:
    iam = cloud.client("iam", account)
    statement = {"Effect": "Allow", "Principal": {"AWS": account.account_id}, "Action": "sts:AssumeRole"}
    trust_users = {"Version": "2012-10-17", "Statement": [statement]}
    iam.create_role(RoleName="not-ec2", AssumeRolePolicyDocument=json.dumps(trust_users))
    iam.create_instance_profile(InstanceProfileName="not-ec2")
    iam.add_role_to_instance_profile(InstanceProfileName="not-ec2", RoleName="not-ec2")
    instance = launch(cloud, account, IamInstanceProfile={"Name": "not-ec2"})
    status, body = metadata(cloud, instance, "/latest/meta-data/iam/security-credentials/not-ec2", False)
    assert status == 200 and json.loads(body)["Code"] == "AssumeRoleUnauthorizedAccess"
    assert "AccessKeyId" not in json.loads(body)


def test_passing_a_role_to_an_instance_needs_iam_pass_role(cloud: Cloud, account: Keys) -> None:
    created = profile(cloud.client("iam", account), "passed")
    ami = register_tiny_image(cloud, account)
    launcher = user_keys(cloud, account, allow=["ec2:*"])
    with pytest.raises(ClientError) as err:
        cloud.client("ec2", launcher).run_instances(
            ImageId=ami, MinCount=1, MaxCount=1, IamInstanceProfile={"Name": "passed"}
        )
    assert code(err) == "UnauthorizedOperation"
    assert "iam:PassRole" in err.value.response["Error"]["Message"]
    passer = user_keys(cloud, account, allow=["ec2:*", "iam:PassRole"])
    started = cloud.client("ec2", passer).run_instances(
        ImageId=ami, MinCount=1, MaxCount=1, IamInstanceProfile={"Arn": created["Arn"]}
    )
    assert started["Instances"][0]["IamInstanceProfile"]["Arn"] == created["Arn"]
