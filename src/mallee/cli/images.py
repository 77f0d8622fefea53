"""`mallee image …` and `mallee cloud-cert`: build, bundle and publish images.

`mallee cloud-cert` prints the cloud certificate (`cloud-cert.pem`) from the data directory: like
`mallee up`, it runs on the cloud's host, so it reads the file rather than asking over HTTP
(the certificate is public; any host that needs it can copy it from there).
`image bundle` uses the same certificate by default.
`image build tiny-disk` makes the tiny guest as one bootable whole-disk image (`disk.img`: MBR,
syslinux on a FAT boot partition, the ext4 root on the second partition; see images/disk.py).
`image publish` is a boto3 client with the aws profile: it uploads to the bucket
`mallee-images-<account id>` and registers with RegisterImage, like any user could. It publishes a
bundle directory (`*.manifest.xml` and its parts), a whole-disk image (`disk.img` or `disk.qcow2`,
registered as hvm with root device /dev/vda and no kernel), or a kernel image directory (kernel,
ramdisk and root file system: `image build tiny` or `image build debian`).
`image to-ebs` turns a registered instance-store image (a raw or qcow2 root; not a bundle) into an
EBS-backed one as a user would on AWS: ImportSnapshot of its root object, then RegisterImage with
that snapshot at the same root device, kernel and ramdisk; it prints the new ami id.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import BotoCoreError, ClientError, ProfileNotFound

from mallee.cli.client import ApiError
from mallee.core import config as config_mod

# A kernel image directory: `image build tiny` (vmlinux, the PVH fast path) or `image build debian` (vmlinuz).
KERNELS = ("vmlinux", "vmlinuz")
KERNEL_IMAGE_FILES = {"ramdisk": "initrd.img", "machine": "rootfs.img"}
DISK_FILES = ("disk.img", "disk.qcow2")


def add_parsers(sub: Any) -> None:
    sub.add_parser("cloud-cert", help="print the cloud certificate (for bundling images)")
    image = sub.add_parser("image", help="build, bundle and publish images").add_subparsers(
        dest="image_command", required=True
    )
    build = image.add_parser("build", help="build a guest image").add_subparsers(dest="kind", required=True)
    build.add_parser("tiny", help="the tiny Debian-based guest").add_argument("--out", type=Path)
    debian = build.add_parser("debian", help="Debian 12 with the stock cloud-init (needs mmdebstrap, root)")
    debian.add_argument("--out", type=Path)
    disk = build.add_parser("tiny-disk", help="the tiny guest as a whole-disk (hvm) image: OUT/disk.img")
    disk.add_argument("--out", type=Path, required=True, help="directory for disk.img (or disk.qcow2)")
    disk.add_argument("--format", default="raw", choices=("raw", "qcow2"))
    bundle = image.add_parser("bundle", help="make a euca2ools-compatible bundle of a file")
    bundle.add_argument("file", type=Path)
    bundle.add_argument("--type", required=True, choices=("kernel", "ramdisk", "machine"))
    bundle.add_argument("--out", type=Path, required=True)
    bundle.add_argument("--cert", type=Path, help="cloud certificate (default: DATA_DIR/cloud-cert.pem)")
    bundle.add_argument("--user", default="000000000000", help="account id written in the manifest")
    bundle.add_argument("--kernel", help="aki- id of a machine image's kernel")
    bundle.add_argument("--ramdisk", help="ari- id of a machine image's ramdisk")
    bundle.add_argument("--arch", default="x86_64")
    bundle.add_argument("--part-size", type=int, default=10 * 1024 * 1024)
    publish = image.add_parser(
        "publish", help="upload a tiny image, bundle or whole-disk image directory and register it"
    )
    publish.add_argument("dir", type=Path)
    publish.add_argument("--name", required=True)
    publish.add_argument("--public", action="store_true", help="let every account launch it")
    publish.add_argument("--bucket", help="default: mallee-images-<account id>")
    to_ebs = image.add_parser("to-ebs", help="make an EBS-backed image of an instance-store image")
    to_ebs.add_argument("image_id", help="the instance-store ami- to convert")
    to_ebs.add_argument("--name", required=True, help="the new image's name")
    to_ebs.add_argument("--size", type=int, help="root volume GiB (default: the disk's own size)")
    to_ebs.add_argument("--public", action="store_true", help="let every account launch it")
    to_ebs.add_argument("--timeout", type=float, default=600, help="seconds to wait for the import")


def cloud_cert(args: argparse.Namespace) -> int:
    path = config_mod.load(args.data_dir).data_dir / "cloud-cert.pem"
    if not path.exists():
        raise ApiError(0, "NoCertificate", f"{path} does not exist (has `mallee up` run here?)")
    sys.stdout.write(path.read_text())
    return 0


def image(args: argparse.Namespace) -> int:
    if args.image_command == "build":
        return _build(args)
    if args.image_command == "bundle":
        return _bundle(args)
    if args.image_command == "to-ebs":
        return _boto_errors(_to_ebs, args)
    return _boto_errors(_publish, args)


def _build(args: argparse.Namespace) -> int:
    from mallee.images.tiny import build_tiny  # heavy; only for this command

    if args.kind == "debian":
        from mallee.images.debian_cloud import BuildError, build_debian

        try:
            print(build_debian(args.out).directory)
        except BuildError as exc:
            raise ApiError(0, "ImageBuildFailed", str(exc)) from None
        return 0
    if args.kind == "tiny-disk":
        from mallee.images.disk import DiskError, build_disk

        tiny = build_tiny()
        name = "disk.img" if args.format == "raw" else "disk.qcow2"
        try:
            made = build_disk(tiny.bzimage, tiny.initrd, tiny.rootfs, args.out / name, args.format)
        except DiskError as exc:
            raise ApiError(0, "DiskImageFailed", str(exc)) from None
        print(made.path)
        return 0
    built = build_tiny(args.out)
    print(built.directory)
    return 0


def _bundle(args: argparse.Namespace) -> int:
    from mallee.images.bundle import bundle_file

    cert = args.cert or config_mod.load(args.data_dir).data_dir / "cloud-cert.pem"
    if not cert.exists():
        raise ApiError(0, "NoCertificate", f"{cert} does not exist; pass --cert (see `mallee cloud-cert`)")
    made = bundle_file(
        args.file,
        args.out,
        image_type=args.type,
        cloud_cert_pem=cert.read_bytes(),
        user=args.user,
        architecture=args.arch,
        kernel_id=args.kernel,
        ramdisk_id=args.ramdisk,
        part_size=args.part_size,
    )
    print(made.manifest)
    return 0


def _publish(args: argparse.Namespace) -> int:
    session = boto3.Session(profile_name=args.profile)
    ec2, s3 = session.client("ec2"), session.client("s3")
    account = session.client("sts").get_caller_identity()["Account"]
    bucket = args.bucket or f"mallee-images-{account}"
    try:
        s3.head_bucket(Bucket=bucket)
    except ClientError:
        s3.create_bucket(Bucket=bucket)
    directory: Path = args.dir
    manifests = sorted(directory.glob("*.manifest.xml"))
    disks = [directory / name for name in DISK_FILES if (directory / name).is_file()]
    if manifests:
        ids = _publish_bundle(ec2, s3, bucket, args.name, directory, manifests[0])
    elif disks:
        ids = _publish_disk(ec2, s3, bucket, args.name, disks[0])
    else:
        ids = _publish_tiny(ec2, s3, bucket, args.name, directory)
    if args.public:
        for image_id in ids.values():
            ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
    for kind, image_id in ids.items():
        print(f"{kind}\t{image_id}")
    return 0


def _publish_bundle(
    ec2: Any, s3: Any, bucket: str, name: str, directory: Path, manifest: Path
) -> dict[str, str]:
    prefix = f"{name}/"
    for path in sorted(directory.iterdir()):
        if path.is_file():
            s3.upload_file(str(path), bucket, prefix + path.name)
    image_id = ec2.register_image(Name=name, ImageLocation=f"{bucket}/{prefix}{manifest.name}")["ImageId"]
    return {"image": image_id}


def _publish_disk(ec2: Any, s3: Any, bucket: str, name: str, disk: Path) -> dict[str, str]:
    """A whole-disk image boots itself: hvm, root device /dev/vda, no kernel or ramdisk."""
    key = f"{name}/{disk.name}"
    s3.upload_file(str(disk), bucket, key)
    machine = ec2.register_image(
        Name=name,
        ImageLocation=f"{bucket}/{key}",
        VirtualizationType="hvm",
        RootDeviceName="/dev/vda",
        Architecture="x86_64",
    )["ImageId"]
    return {"machine": machine}


def _publish_tiny(ec2: Any, s3: Any, bucket: str, name: str, directory: Path) -> dict[str, str]:
    kernel_file = next((f for f in KERNELS if (directory / f).is_file()), " or ".join(KERNELS))
    files = {"kernel": kernel_file, **KERNEL_IMAGE_FILES}
    missing = [f for f in files.values() if not (directory / f).is_file()]
    if missing:
        raise ApiError(
            0, "NotAnImage", f"{directory} has no {', '.join(missing)}, no *.manifest.xml and no disk.img"
        )
    location = {kind: f"{bucket}/{name}/{file}" for kind, file in files.items()}
    for file in files.values():
        s3.upload_file(str(directory / file), bucket, f"{name}/{file}")
    kernel = ec2.register_image(Name=f"{name}-kernel", ImageLocation=location["kernel"])["ImageId"]
    ramdisk = ec2.register_image(Name=f"{name}-ramdisk", ImageLocation=location["ramdisk"])["ImageId"]
    machine = ec2.register_image(
        Name=name,
        ImageLocation=location["machine"],
        KernelId=kernel,
        RamdiskId=ramdisk,
        VirtualizationType="paravirtual",
        RootDeviceName="/dev/vda",
        Architecture="x86_64",
    )["ImageId"]
    return {"kernel": kernel, "ramdisk": ramdisk, "machine": machine}


def _boto_errors(command: Any, args: argparse.Namespace) -> int:
    try:
        result: int = command(args)
    except ProfileNotFound as exc:
        raise ApiError(0, "ProfileNotFound", str(exc)) from None
    except ClientError as exc:
        error = exc.response.get("Error", {})
        raise ApiError(0, error.get("Code", "Error"), error.get("Message", str(exc))) from None
    except BotoCoreError as exc:
        raise ApiError(0, "ConnectionError", str(exc)) from None
    return result


def _to_ebs(args: argparse.Namespace) -> int:
    session = boto3.Session(profile_name=args.profile)
    ec2, s3 = session.client("ec2"), session.client("s3")
    source = ec2.describe_images(ImageIds=[args.image_id])["Images"][0]
    if source.get("RootDeviceType") == "ebs":
        raise ApiError(0, "AlreadyEbs", f"{args.image_id} is EBS-backed already")
    location = source["ImageLocation"]
    if location.endswith("manifest.xml"):
        raise ApiError(
            0, "UnsupportedOperation", "a bundle: publish its unbundled disk image, then convert that"
        )
    bucket, _, key = location.partition("/")
    head = s3.get_object(Bucket=bucket, Key=key, Range="bytes=0-3")["Body"].read()
    disk_format = "QCOW2" if head.startswith(b"QFI\xfb") else "RAW"
    container = {"Format": disk_format, "UserBucket": {"S3Bucket": bucket, "S3Key": key}}
    task_id = ec2.import_snapshot(Description=f"root of {args.image_id}", DiskContainer=container)[
        "ImportTaskId"
    ]
    deadline = time.monotonic() + args.timeout
    while True:
        task = ec2.describe_import_snapshot_tasks(ImportTaskIds=[task_id])["ImportSnapshotTasks"][0]
        detail = task["SnapshotTaskDetail"]
        if detail["Status"] == "completed":
            break
        if detail["Status"] != "active" or time.monotonic() > deadline:
            raise ApiError(
                0, "ImportFailed", f"{task_id}: {detail['Status']} ({detail.get('StatusMessage', '')})"
            )
        time.sleep(0.5)
    root = source.get("RootDeviceName") or "/dev/xvda"
    ebs: dict[str, Any] = {"SnapshotId": detail["SnapshotId"], "DeleteOnTermination": True}
    if args.size:
        ebs["VolumeSize"] = args.size
    boot = {k: source[k] for k in ("KernelId", "RamdiskId") if source.get(k)}
    ami = ec2.register_image(
        Name=args.name,
        Description=f"EBS-backed {args.image_id}",
        Architecture=source.get("Architecture", "x86_64"),
        VirtualizationType=source.get("VirtualizationType", "hvm"),
        RootDeviceName=root,
        BlockDeviceMappings=[{"DeviceName": root, "Ebs": ebs}],
        **boot,
    )["ImageId"]
    if args.public:
        for image_id in (ami, detail["SnapshotId"]):
            if image_id.startswith("ami-"):
                ec2.modify_image_attribute(ImageId=image_id, LaunchPermission={"Add": [{"Group": "all"}]})
            else:
                ec2.modify_snapshot_attribute(
                    SnapshotId=image_id,
                    Attribute="createVolumePermission",
                    OperationType="add",
                    GroupNames=["all"],
                )
    print(f"snapshot\t{detail['SnapshotId']}")
    print(f"machine\t{ami}")
    return 0
