"""EC2 images against a running cloud: register from Walrus objects (plain files and bundles),
describe and its filters, launch permissions across accounts, deregister, error codes, and
`mallee image publish`."""

from __future__ import annotations

import gzip
import secrets
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from functional.conftest import on_both_databases
from mallee.images import bundle
from support.cloud import Cloud, Keys

cloud = on_both_databases()  # every test here on SQLite and on PostgreSQL

KERNEL = b"\x7fELF\x02\x01\x01" + bytes(200)
RAMDISK = gzip.compress(b"070701" + bytes(100))
ROOTFS = bytes(4096)


def _code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


def _bucket(cloud: Cloud, keys: Keys, files: dict[str, bytes]) -> str:
    s3 = cloud.client("s3", keys)
    name = f"img-{secrets.token_hex(5)}"
    s3.create_bucket(Bucket=name)
    for key, data in files.items():
        s3.put_object(Bucket=name, Key=key, Body=data)
    return name


def _register_tiny(cloud: Cloud, keys: Keys) -> dict[str, str]:
    ec2 = cloud.client("ec2", keys)
    bucket = _bucket(cloud, keys, {"vmlinux": KERNEL, "initrd.img": RAMDISK, "rootfs.img": ROOTFS})
    tag = secrets.token_hex(3)
    kernel = ec2.register_image(Name=f"k-{tag}", ImageLocation=f"{bucket}/vmlinux")["ImageId"]
    ramdisk = ec2.register_image(Name=f"r-{tag}", ImageLocation=f"{bucket}/initrd.img")["ImageId"]
    machine = ec2.register_image(
        Name=f"m-{tag}",
        ImageLocation=f"{bucket}/rootfs.img",
        KernelId=kernel,
        RamdiskId=ramdisk,
        Description="tiny",
        TagSpecifications=[{"ResourceType": "image", "Tags": [{"Key": "flavour", "Value": "tiny"}]}],
    )["ImageId"]
    return {"kernel": kernel, "ramdisk": ramdisk, "machine": machine, "bucket": bucket, "tag": tag}


def test_register_plain_files_and_describe(cloud: Cloud, account: Keys) -> None:
    made = _register_tiny(cloud, account)
    assert made["kernel"].startswith("aki-") and made["ramdisk"].startswith("ari-")
    assert made["machine"].startswith("ami-") and len(made["machine"]) == 21
    ec2 = cloud.client("ec2", account)
    images = {i["ImageId"]: i for i in ec2.describe_images(Owners=["self"])["Images"]}
    machine = images[made["machine"]]
    assert machine["State"] == "available" and machine["ImageType"] == "machine"
    assert machine["KernelId"] == made["kernel"] and machine["RamdiskId"] == made["ramdisk"]
    assert machine["VirtualizationType"] == "paravirtual" and machine["Architecture"] == "x86_64"
    assert machine["OwnerId"] == account.account_id and machine["Public"] is False
    assert machine["ImageLocation"] == f"{made['bucket']}/rootfs.img"
    assert machine["Tags"] == [{"Key": "flavour", "Value": "tiny"}] and machine["Description"] == "tiny"
    assert images[made["kernel"]]["ImageType"] == "kernel"
    assert images[made["ramdisk"]]["ImageType"] == "ramdisk"


@pytest.mark.parametrize(
    ("name", "values", "expect"),
    [
        ("image-type", ["kernel"], {"kernel"}),
        ("image-type", ["kernel", "ramdisk"], {"kernel", "ramdisk"}),
        ("kernel-id", None, {"machine"}),
        ("tag:flavour", ["tiny"], {"machine"}),
        ("name", ["k-*"], {"kernel"}),
        ("virtualization-type", ["hvm"], set()),
        ("is-public", ["false"], {"kernel", "ramdisk", "machine"}),
        ("state", ["available"], {"kernel", "ramdisk", "machine"}),
        ("architecture", ["x86_64"], {"kernel", "ramdisk", "machine"}),
    ],
)
def test_describe_filters(cloud: Cloud, name: str, values: list[str] | None, expect: set[str]) -> None:
    keys = cloud.new_account()
    made = _register_tiny(cloud, keys)
    by_id = {v: k for k, v in made.items()}
    wanted = values if values is not None else [made["kernel"]]
    # Owners=self: other tests' public images (on this worker's cloud) are not this test's concern.
    found = cloud.client("ec2", keys).describe_images(
        Owners=["self"], Filters=[{"Name": name, "Values": wanted}]
    )["Images"]
    assert {by_id[i["ImageId"]] for i in found} == expect


def test_register_hvm_disk_and_bundle(cloud: Cloud, account: Keys, tmp_path: Path) -> None:
    ec2 = cloud.client("ec2", account)
    qcow = b"QFI\xfb" + bytes(500)
    source = tmp_path / "vmlinuz"
    source.write_bytes(KERNEL)
    cert = (cloud.data_dir / "cloud-cert.pem").read_bytes()
    made = bundle.bundle_file(source, tmp_path / "b", image_type="kernel", cloud_cert_pem=cert, part_size=100)
    files = {"disk.qcow2": qcow} | {p.name: p.read_bytes() for p in [made.manifest, *made.parts]}
    bucket = _bucket(cloud, account, files)
    hvm = ec2.register_image(
        Name="whole-disk", ImageLocation=f"{bucket}/disk.qcow2", VirtualizationType="hvm"
    )
    shown = ec2.describe_images(ImageIds=[hvm["ImageId"]])["Images"][0]
    assert shown["VirtualizationType"] == "hvm" and shown["RootDeviceName"] == "/dev/vda"
    assert "KernelId" not in shown
    bundled = ec2.register_image(Name="bundled-kernel", ImageLocation=f"{bucket}/{made.manifest.name}")
    assert bundled["ImageId"].startswith("aki-")  # the type comes from the manifest
    shown = ec2.describe_images(ImageIds=[bundled["ImageId"]])["Images"][0]
    assert shown["ImageType"] == "kernel"
    assert shown["ImageLocation"] == f"{bucket}/{made.manifest.name}"


def test_launch_permissions_across_accounts(cloud: Cloud, account: Keys) -> None:
    owner = cloud.client("ec2", account)
    friend_keys, stranger_keys = cloud.new_account(), cloud.new_account()
    friend, stranger = cloud.client("ec2", friend_keys), cloud.client("ec2", stranger_keys)
    image_id = _register_tiny(cloud, account)["machine"]

    with pytest.raises(ClientError) as hidden:
        friend.describe_images(ImageIds=[image_id])
    assert _code(hidden) == "InvalidAMIID.NotFound"
    assert image_id not in [i["ImageId"] for i in friend.describe_images()["Images"]]

    owner.modify_image_attribute(
        ImageId=image_id, LaunchPermission={"Add": [{"UserId": friend_keys.account_id}]}
    )
    shared = friend.describe_images(ImageIds=[image_id])["Images"][0]
    assert shared["OwnerId"] == account.account_id and "Tags" not in shared or shared["Tags"] == []
    assert image_id in [i["ImageId"] for i in friend.describe_images(ExecutableUsers=["self"])["Images"]]
    with pytest.raises(ClientError) as not_owner:
        friend.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    assert _code(not_owner) == "AuthFailure"
    with pytest.raises(ClientError):
        stranger.describe_images(ImageIds=[image_id])

    owner.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    perms = owner.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")[
        "LaunchPermissions"
    ]
    assert {"Group": "all"} in perms and {"UserId": friend_keys.account_id} in perms
    public = stranger.describe_images(ImageIds=[image_id])["Images"][0]
    assert public["Public"] is True
    assert image_id in [i["ImageId"] for i in stranger.describe_images(ExecutableUsers=["all"])["Images"]]
    assert image_id not in [i["ImageId"] for i in stranger.describe_images(Owners=["self"])["Images"]]

    owner.modify_image_attribute(ImageId=image_id, LaunchPermission={"Remove": [{"Group": "all"}]})
    with pytest.raises(ClientError):
        stranger.describe_images(ImageIds=[image_id])
    owner.reset_image_attribute(ImageId=image_id, Attribute="launchPermission")
    assert (
        owner.describe_image_attribute(ImageId=image_id, Attribute="launchPermission")["LaunchPermissions"]
        == []
    )
    with pytest.raises(ClientError):
        friend.describe_images(ImageIds=[image_id])

    owner.modify_image_attribute(ImageId=image_id, Description={"Value": "renamed"})
    desc = owner.describe_image_attribute(ImageId=image_id, Attribute="description")
    assert desc["Description"] == {"Value": "renamed"}


def test_deregister_and_error_codes(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    made = _register_tiny(cloud, account)
    cases: list[tuple[dict[str, Any], str]] = [
        (
            {"Name": f"m-{made['tag']}", "ImageLocation": f"{made['bucket']}/rootfs.img"},
            "InvalidAMIName.Duplicate",
        ),
        ({"Name": "nothing-there", "ImageLocation": f"{made['bucket']}/missing.img"}, "InvalidManifest"),
        (
            {"Name": "no-bucket", "ImageLocation": f"no-such-bucket-{secrets.token_hex(4)}/x"},
            "InvalidManifest",
        ),
        (
            {
                "Name": "bad-kernel",
                "ImageLocation": f"{made['bucket']}/rootfs.img",
                "KernelId": made["ramdisk"],
            },
            "InvalidKernelId.Malformed",
        ),
        ({"Name": "bad*name", "ImageLocation": f"{made['bucket']}/rootfs.img"}, "InvalidAMIName.Malformed"),
    ]
    for params, code in cases:
        with pytest.raises(ClientError) as err:
            ec2.register_image(**params)
        assert _code(err) == code, params

    # Another account cannot register an image from this account's private object.
    other = cloud.client("ec2", cloud.new_account())
    with pytest.raises(ClientError) as theirs:
        other.register_image(Name="stolen", ImageLocation=f"{made['bucket']}/rootfs.img")
    assert _code(theirs) == "InvalidManifest"
    with pytest.raises(ClientError) as not_theirs:
        other.deregister_image(ImageId=made["machine"])
    assert _code(not_theirs) == "InvalidAMIID.NotFound"

    with pytest.raises(ClientError) as malformed:
        ec2.describe_images(ImageIds=["ami-nothex"])
    assert _code(malformed) == "InvalidAMIID.Malformed"
    assert ec2.deregister_image(ImageId=made["machine"])["Return"] is True
    with pytest.raises(ClientError) as gone:
        ec2.describe_images(ImageIds=[made["machine"]])
    assert _code(gone) == "InvalidAMIID.NotFound"
    assert ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [made["machine"]]}])["Tags"] == []


def test_tags_on_images_and_key_pairs(cloud: Cloud, account: Keys) -> None:
    ec2 = cloud.client("ec2", account)
    image_id = _register_tiny(cloud, account)["kernel"]
    key_id = ec2.create_key_pair(KeyName="tagged")["KeyPairId"]
    ec2.create_tags(
        Resources=[image_id, key_id], Tags=[{"Key": "env", "Value": "test"}, {"Key": "x", "Value": ""}]
    )
    tags = ec2.describe_tags(Filters=[{"Name": "key", "Values": ["env"]}])["Tags"]
    assert {(t["ResourceId"], t["ResourceType"]) for t in tags} == {(image_id, "image"), (key_id, "key-pair")}
    ec2.delete_tags(Resources=[image_id], Tags=[{"Key": "env"}])
    left = ec2.describe_tags(Filters=[{"Name": "resource-id", "Values": [image_id]}])["Tags"]
    assert [t["Key"] for t in left] == ["x"]
    with pytest.raises(ClientError) as bad:  # a kind of resource Mallee does not have
        ec2.create_tags(Resources=["nat-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert _code(bad) == "InvalidID"
    with pytest.raises(ClientError) as missing:
        ec2.create_tags(Resources=["vol-0123456789abcdef0"], Tags=[{"Key": "a", "Value": "b"}])
    assert _code(missing) == "InvalidVolume.NotFound"
    other = cloud.client("ec2", cloud.new_account())
    with pytest.raises(ClientError) as not_mine:
        other.create_tags(Resources=[image_id], Tags=[{"Key": "a", "Value": "b"}])
    assert _code(not_mine) == "InvalidAMIID.NotFound"


def test_cli_publish_tiny_image_dir(cloud: Cloud, tmp_path: Path) -> None:
    directory = tmp_path / "tiny"
    directory.mkdir()
    (directory / "vmlinux").write_bytes(KERNEL)
    (directory / "initrd.img").write_bytes(RAMDISK)
    (directory / "rootfs.img").write_bytes(ROOTFS)
    name = f"tiny-{secrets.token_hex(3)}"
    result = cloud.run("mallee", "image", "publish", str(directory), "--name", name, "--public")
    assert result.returncode == 0, result.stderr
    ids = dict(line.split("\t") for line in result.stdout.strip().splitlines())
    assert set(ids) == {"kernel", "ramdisk", "machine"}
    someone = cloud.client("ec2", cloud.new_account())
    machine = someone.describe_images(ImageIds=[ids["machine"]])["Images"][0]
    assert machine["Name"] == name and machine["Public"] is True
    assert machine["KernelId"] == ids["kernel"] and machine["RamdiskId"] == ids["ramdisk"]
    assert machine["RootDeviceName"] == "/dev/vda"
    amazon = someone.describe_images(Owners=["amazon"], Filters=[{"Name": "name", "Values": [name]}])[
        "Images"
    ]
    assert [i["ImageId"] for i in amazon] == [ids["machine"]]


def test_cli_bundle_then_publish(cloud: Cloud, tmp_path: Path) -> None:
    source = tmp_path / "disk.img"
    source.write_bytes(ROOTFS)
    cert = cloud.run("mallee", "cloud-cert")
    assert cert.returncode == 0 and cert.stdout.startswith("-----BEGIN CERTIFICATE-----")
    out = tmp_path / "bundle"
    made = cloud.run("mallee", "image", "bundle", str(source), "--type", "machine", "--out", str(out))
    assert made.returncode == 0, made.stderr
    assert Path(made.stdout.strip()) == out / "disk.img.manifest.xml"
    name = f"bundled-{secrets.token_hex(3)}"
    published = cloud.run("mallee", "image", "publish", str(out), "--name", name)
    assert published.returncode == 0, published.stderr
    image_id = published.stdout.split()[1]
    shown = cloud.client("ec2").describe_images(ImageIds=[image_id])["Images"][0]
    assert shown["ImageType"] == "machine" and shown["VirtualizationType"] == "hvm"
    assert shown["ImageLocation"].endswith(f"{name}/disk.img.manifest.xml")
