"""Images: RegisterImage, DescribeImages, DeregisterImage, Describe/Modify/ResetImageAttribute.

An image is an object in Walrus, named by `ImageLocation` = `bucket/key`:

- a bundle: a key ending in `manifest.xml` (euca-bundle-image / ec2-bundle-image / `mallee image
  bundle`). Its `<image><type>` says kernel, ramdisk or machine; its `<machine_configuration>`
  supplies the architecture, kernel and ramdisk when the request does not.
- a plain file: a raw kernel, ramdisk, root file system, or whole disk (raw or qcow2). **Decision:**
  its type comes from the request and the object's first bytes. A request with KernelId, RamdiskId,
  RootDeviceName or VirtualizationType registers a machine image; otherwise an ELF file or a bzImage
  (`HdrS` at 0x202) is a kernel, a gzip/xz/zstd/lz4/cpio stream is a ramdisk, and anything else
  (ext4, an MBR/GPT disk, qcow2) is a machine image. qcow2 is recognised by its magic.

**How the CLC checks the object:** it reads it over the S3 API like any client, signed with the
*caller's own* credentials (the key that signed this request), straight at Walrus. So the caller can
register exactly what it may read: its own buckets' objects, and objects others shared with it or made
public. A missing or unreadable object, or an unparsable manifest, is `InvalidManifest`.

Visibility: the owner, accounts given a launch permission, and everyone for public images
(`Group=all`). Another account's private image is `InvalidAMIID.NotFound`, as on AWS.
"""

from __future__ import annotations

import json
import re
from typing import Any

import boto3
from botocore.client import Config as BotoConfig
from botocore.exceptions import BotoCoreError, ClientError
from sqlalchemy import delete, or_, select
from sqlalchemy.orm import Session

from mallee.core import clock, ids, open_transactions
from mallee.core.context import RequestContext
from mallee.core.errors import CloudError
from mallee.images import bundle
from mallee.rpc import contract, node
from mallee.services.clc import peers
from mallee.services.clc.apis import EC2
from mallee.services.clc.ec2 import block_devices, tags
from mallee.services.clc.paging import page
from mallee.services.clc.tables import Account, Image, LaunchPermission

PREFIXES = {"machine": "ami", "kernel": "aki", "ramdisk": "ari"}
ARCHITECTURES = ("x86_64",)
ROOT_DEVICES = ("/dev/sda1", "/dev/sda", "/dev/vda", "/dev/xvda")
MAX_MANIFEST = 4 * 1024 * 1024
_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./\-'@_]{3,128}$")
_ACCOUNT = re.compile(r"^\d{12}$")


# -- reading the object ----------------------------------------------------------------------------


def _s3(ctx: RequestContext) -> Any:
    principal = ctx.principal
    assert principal is not None
    return boto3.session.Session().client(
        "s3",
        endpoint_url=peers.walrus().base_url,
        region_name=ctx.region,
        aws_access_key_id=principal.access_key_id,
        aws_secret_access_key=ctx.secret_key,
        aws_session_token=principal.session_token,
        config=BotoConfig(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 1},
            connect_timeout=5,
            read_timeout=30,
        ),
    )


def read_object(ctx: RequestContext, location: str, length: int) -> tuple[bytes, int]:
    """The first `length` bytes of the object at `bucket/key` and its size, read as the caller."""
    open_transactions.refuse_inside("reading an image object from Walrus")
    bucket, _, key = location.partition("/")
    if not bucket or not key:
        raise CloudError("InvalidParameterValue", f"ImageLocation must be bucket/key, not {location!r}")
    try:
        got = _s3(ctx).get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{length - 1}")
        data = got["Body"].read()
        size = int(str(got.get("ContentRange", "")).rpartition("/")[2] or len(data))
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code == "InvalidRange":  # an empty object
            return b"", 0
        raise CloudError(
            "InvalidManifest", f"Cannot read {location} ({code}): it must exist and be readable by you."
        ) from exc
    except BotoCoreError as exc:
        raise CloudError("ServiceUnavailable", f"Walrus is not reachable: {exc}") from exc
    return data, size


def sniff(head: bytes) -> tuple[str, str]:
    """(image type, format) guessed from a plain file's first bytes."""
    if head.startswith(b"QFI\xfb"):
        return "machine", "qcow2"
    if head.startswith(b"\x7fELF") or head[0x202:0x206] == b"HdrS":
        return "kernel", "raw"
    ramdisk_magics = (
        b"\x1f\x8b",
        b"\xfd7zXZ",
        b"\x28\xb5\x2f\xfd",
        b"\x02\x21\x4c\x18",
        b"070701",
        b"070702",
    )
    if head.startswith(ramdisk_magics):
        return "ramdisk", "raw"
    return "machine", "raw"


def read_manifest(data: bytes) -> bundle.Manifest:
    """A bundle's manifest, read once at registration (launches carry what nodes need of it)."""
    try:
        manifest = bundle.parse_manifest(data)
    except bundle.BundleError as exc:
        raise CloudError("InvalidManifest", f"Not an image bundle manifest: {exc}.") from exc
    if manifest.image_type not in PREFIXES or not manifest.parts:
        raise CloudError("InvalidManifest", "Not an image bundle manifest (manifest/image/parts).")
    # Each part is an object next to the manifest, named by its file name.
    if any(not name or "/" in name or name in (".", "..") for name, _digest in manifest.parts):
        raise CloudError("InvalidManifest", "The manifest names no usable parts.")
    return manifest


def node_manifest(manifest: bundle.Manifest) -> str:
    """What a node needs of the manifest to unbundle the image (rpc/node.py BundleManifest), as JSON."""
    needed = node.BundleManifest(
        encrypted_key=manifest.ec2_encrypted_key,
        encrypted_iv=manifest.ec2_encrypted_iv,
        digest=manifest.digest,
        parts=manifest.parts,
    )
    return contract.encode(needed).decode()


# -- visibility ------------------------------------------------------------------------------------


def is_image_id(value: str) -> bool:
    return any(ids.is_resource_id(value, prefix) for prefix in PREFIXES.values())


def _visible_clause(account_id: str) -> Any:
    shared = select(LaunchPermission.image_id).where(LaunchPermission.account_id == account_id)
    return or_(Image.account_id == account_id, Image.is_public.is_(True), Image.id.in_(shared))


def visible_image(s: Session, account_id: str, image_id: str) -> Image:
    """An image the account may see and launch, or the AWS error for it."""
    if not is_image_id(image_id):
        raise CloudError("InvalidAMIID.Malformed", f'Invalid id: "{image_id}"')
    image = s.scalar(select(Image).where(Image.id == image_id, _visible_clause(account_id)))
    if image is None:
        raise CloudError("InvalidAMIID.NotFound", f"The image id '[{image_id}]' does not exist")
    return image


def _owned_image(ctx: RequestContext, image_id: str) -> Image:
    image = visible_image(ctx.session, str(ctx.account_id), image_id)
    if image.account_id != ctx.account_id:
        raise CloudError("AuthFailure", f"Not authorized for image:{image_id}")
    return image


def referenced(ctx: RequestContext, image_id: str | None, image_type: str, member: str) -> str | None:
    if not image_id:
        return None
    code = "InvalidKernelId.Malformed" if image_type == "kernel" else "InvalidRamDiskID.Malformed"
    if not ids.is_resource_id(image_id, PREFIXES[image_type]):
        raise CloudError(code, f"{member} {image_id!r} is not a {image_type} image id")
    found = visible_image(ctx.session, str(ctx.account_id), image_id)
    if found.image_type != image_type:
        raise CloudError(code, f"{image_id} is not a {image_type} image")
    return image_id


# -- handlers --------------------------------------------------------------------------------------


def checked_name(name: str | None) -> str:
    if not name:
        raise CloudError("MissingParameter", "The request must contain the parameter Name")
    if not _NAME.match(name):
        raise CloudError(
            "InvalidAMIName.Malformed",
            "AMI names are 3-128 letters, digits, spaces and ( ) [ ] . / - ' @ _",
        )
    return name


def refuse_duplicate(s: Session, account_id: str, name: str) -> None:
    found = s.scalar(select(Image.id).where(Image.account_id == account_id, Image.name == name))
    if found:
        raise CloudError("InvalidAMIName.Duplicate", f"AMI name {name} is already in use by AMI {found}")


@EC2.operation()
def register_image(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s: Session = ctx.session
    name = checked_name(p.get("Name"))
    location = (p.get("ImageLocation") or "").lstrip("/")
    ebs = not location  # EBS-backed: its root is a snapshot in BlockDeviceMappings
    if ebs and not p.get("BlockDeviceMappings"):
        raise CloudError(
            "MissingParameter", "Give ImageLocation, or BlockDeviceMappings with the root's SnapshotId."
        )
    if location.startswith(("http://", "https://")):  # Eucalyptus accepts the full URL
        location = location.split("/", 3)[3] if location.count("/") >= 3 else ""
    machine_hint = ebs or any(
        p.get(m) for m in ("KernelId", "RamdiskId", "RootDeviceName", "VirtualizationType")
    )
    stored_manifest = ""
    defaults: dict[str, Any] = {}
    if ebs:
        image_type, source_format, size = "machine", "ebs", 0
        location = f"{ctx.account_id}/{name}"  # as AWS shows an EBS-backed image's location
    elif location.endswith("manifest.xml"):
        data, _ = read_object(ctx, location, MAX_MANIFEST)
        manifest = read_manifest(data)
        image_type, source_format, size = manifest.image_type, "bundle", manifest.size
        stored_manifest = node_manifest(manifest)
        defaults = {
            "architecture": manifest.architecture,
            "kernel_id": manifest.kernel_id,
            "ramdisk_id": manifest.ramdisk_id,
        }
    else:
        head, size = read_object(ctx, location, 4096)
        image_type, source_format = sniff(head)
        if machine_hint:
            image_type = "machine"
    # Asked after the object was read: no HTTP call inside the request's transaction.
    refuse_duplicate(s, str(ctx.account_id), name)
    architecture = p.get("Architecture") or defaults.get("architecture") or "x86_64"
    if architecture not in ARCHITECTURES:
        raise CloudError(
            "InvalidParameterValue", f"Unsupported architecture {architecture}; Mallee runs x86_64."
        )
    kernel_id = ramdisk_id = root_device = None
    virtualization = "paravirtual"
    if image_type == "machine":
        kernel_id = referenced(ctx, p.get("KernelId") or defaults.get("kernel_id"), "kernel", "KernelId")
        ramdisk_id = referenced(ctx, p.get("RamdiskId") or defaults.get("ramdisk_id"), "ramdisk", "RamdiskId")
        virtualization = p.get("VirtualizationType") or ("paravirtual" if kernel_id else "hvm")
        if virtualization not in ("hvm", "paravirtual"):
            raise CloudError("InvalidParameterValue", f"Invalid VirtualizationType: {virtualization}")
        if virtualization == "paravirtual" and not kernel_id:
            raise CloudError("InvalidParameterCombination", "A paravirtual image needs a KernelId.")
        if virtualization == "hvm" and (kernel_id or ramdisk_id):
            raise CloudError("InvalidParameterCombination", "An hvm image boots its own kernel: no KernelId.")
        root_device = p.get("RootDeviceName") or ("/dev/vda" if virtualization == "hvm" else "/dev/sda1")
        if root_device not in ROOT_DEVICES:
            raise CloudError("InvalidParameterValue", f"Invalid RootDeviceName {root_device}")
    elif machine_hint:
        raise CloudError("InvalidParameterCombination", f"A {image_type} image takes no KernelId/RamdiskId.")
    mappings = p.get("BlockDeviceMappings") or []
    for mapping in mappings:
        if not mapping.get("DeviceName"):
            raise CloudError("InvalidBlockDeviceMapping", "Each block device mapping needs a DeviceName.")
    if ebs:
        mappings = block_devices.for_image(ctx, mappings, str(root_device))
    image = Image(
        id=ids.resource_id(PREFIXES[image_type]),
        account_id=ctx.account_id,
        name=name,
        description=p.get("Description") or "",
        image_type=image_type,
        location=location,
        source_format=source_format,
        manifest=stored_manifest,
        size=size,
        architecture=architecture,
        kernel_id=kernel_id,
        ramdisk_id=ramdisk_id,
        virtualization_type=virtualization,
        root_device_name=root_device,
        block_device_mappings=json.dumps(mappings),
        is_public=False,
        state="available",
        created=clock.now(),
        root_device_type="ebs" if ebs else "instance-store",
    )
    s.add(image)
    s.flush()
    tags.from_specifications(s, str(ctx.account_id), image.id, "image", p.get("TagSpecifications"))
    return {"ImageId": image.id}


def _view(image: Image, tag_list: list[dict[str, str]]) -> dict[str, Any]:
    view: dict[str, Any] = {
        "ImageId": image.id,
        "ImageLocation": image.location,
        "State": image.state,
        "OwnerId": image.account_id,
        "CreationDate": image.created.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
        "Public": image.is_public,
        "Architecture": image.architecture,
        "ImageType": image.image_type,
        "Name": image.name,
        "RootDeviceType": image.root_device_type,
        "VirtualizationType": image.virtualization_type,
        "Hypervisor": "xen",
        "BlockDeviceMappings": json.loads(image.block_device_mappings),
        "PlatformDetails": "Linux/UNIX",
        "UsageOperation": "RunInstances",
        "Tags": tag_list,
    }
    if image.description:
        view["Description"] = image.description
    if image.kernel_id:
        view["KernelId"] = image.kernel_id
    if image.ramdisk_id:
        view["RamdiskId"] = image.ramdisk_id
    if image.root_device_name:
        view["RootDeviceName"] = image.root_device_name
    return view


_FILTERS: dict[str, Any] = {
    "image-id": lambda v: v["ImageId"],
    "name": lambda v: v["Name"],
    "description": lambda v: v.get("Description"),
    "state": lambda v: v["State"],
    "owner-id": lambda v: v["OwnerId"],
    "is-public": lambda v: v["Public"],
    "image-type": lambda v: v["ImageType"],
    "architecture": lambda v: v["Architecture"],
    "kernel-id": lambda v: v.get("KernelId"),
    "ramdisk-id": lambda v: v.get("RamdiskId"),
    "virtualization-type": lambda v: v["VirtualizationType"],
    "root-device-name": lambda v: v.get("RootDeviceName"),
    "root-device-type": lambda v: v["RootDeviceType"],
    "manifest-location": lambda v: v["ImageLocation"],
    "hypervisor": lambda v: v["Hypervisor"],
    "platform-details": lambda v: v["PlatformDetails"],
}


def _system_account_id(s: Session) -> str | None:
    return s.scalar(select(Account.id).where(Account.is_system.is_(True)))


@EC2.operation()
def describe_images(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    s: Session = ctx.session
    me = str(ctx.account_id)
    q = select(Image).where(_visible_clause(me)).order_by(Image.created, Image.id)
    wanted_ids = p.get("ImageIds") or []
    for image_id in wanted_ids:
        visible_image(s, me, image_id)  # malformed / not found errors, as AWS
    if wanted_ids:
        q = q.where(Image.id.in_(wanted_ids))
    owners = p.get("Owners") or []
    if owners:
        owner_ids = set()
        for owner in owners:
            if owner == "self":
                owner_ids.add(me)
            elif owner == "amazon":  # the cloud's own images: the system account's
                owner_ids.add(_system_account_id(s) or "")
            elif _ACCOUNT.match(owner):
                owner_ids.add(owner)
            else:
                raise CloudError("InvalidUserID.Malformed", f"Invalid user id: '{owner}'")
        q = q.where(Image.account_id.in_(owner_ids))
    users = p.get("ExecutableUsers") or []
    if users:
        conditions: list[Any] = []
        for user in users:
            if user == "all":
                conditions.append(Image.is_public.is_(True))
            elif user == "self" or user == me:
                granted = select(LaunchPermission.image_id).where(LaunchPermission.account_id == me)
                conditions.append(or_(Image.account_id == me, Image.id.in_(granted)))
            elif _ACCOUNT.match(user):  # the caller's images shared with that account
                granted = select(LaunchPermission.image_id).where(LaunchPermission.account_id == user)
                conditions.append(Image.id.in_(granted) & (Image.account_id == me))
            else:
                raise CloudError("InvalidUserID.Malformed", f"Invalid user id: '{user}'")
        q = q.where(or_(*conditions))
    images = list(s.scalars(q))
    # Tags are the caller's own: another account's tags on a shared image are not shown.
    tag_map = tags.tags_of(s, [i.id for i in images if i.account_id == me])
    views = [_view(i, tag_map.get(i.id, [])) for i in images]
    views = tags.with_tag_filters(views, p.get("Filters"), _FILTERS)
    limit = p.get("MaxResults")
    if limit is not None and not 5 <= limit <= 1000:
        raise CloudError("InvalidParameterValue", "MaxResults must be between 5 and 1000.")
    chunk, token = page(views, p.get("NextToken"), limit, default=len(views) or 1, code="InvalidNextToken")
    out: dict[str, Any] = {"Images": chunk}
    if token:
        out["NextToken"] = token
    return out


@EC2.operation()
def deregister_image(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    image = _owned_image(ctx, p["ImageId"])
    tags.remove_all(ctx.session, image.id)
    ctx.session.execute(delete(LaunchPermission).where(LaunchPermission.image_id == image.id))
    ctx.session.delete(image)
    return {"Return": True}


def _permissions(s: Session, image: Image) -> list[dict[str, str]]:
    out: list[dict[str, str]] = [{"Group": "all"}] if image.is_public else []
    rows = s.scalars(
        select(LaunchPermission.account_id)
        .where(LaunchPermission.image_id == image.id)
        .order_by(LaunchPermission.account_id)
    )
    return out + [{"UserId": account} for account in rows]


_ATTRIBUTES = ("description", "kernel", "ramdisk", "launchPermission", "productCodes", "blockDeviceMapping")


@EC2.operation()
def describe_image_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    attribute = p["Attribute"]
    if attribute not in _ATTRIBUTES:
        raise CloudError("InvalidParameterValue", f"Value ({attribute}) for parameter attribute is invalid.")
    image = _owned_image(ctx, p["ImageId"])
    out: dict[str, Any] = {"ImageId": image.id}
    if attribute == "description":
        out["Description"] = {"Value": image.description} if image.description else {}
    elif attribute == "kernel":
        out["KernelId"] = {"Value": image.kernel_id} if image.kernel_id else {}
    elif attribute == "ramdisk":
        out["RamdiskId"] = {"Value": image.ramdisk_id} if image.ramdisk_id else {}
    elif attribute == "launchPermission":
        out["LaunchPermissions"] = _permissions(ctx.session, image)
    elif attribute == "productCodes":
        out["ProductCodes"] = []
    else:
        out["BlockDeviceMappings"] = json.loads(image.block_device_mappings)
    return out


def _grant(s: Session, image: Image, permission: dict[str, Any], add: bool) -> None:
    group, user = permission.get("Group"), permission.get("UserId")
    if group is not None:
        if group != "all":
            raise CloudError(
                "InvalidAMIAttributeItemValue", f'Invalid attribute item value "{group}" for group'
            )
        image.is_public = add
    if user is not None:
        if not _ACCOUNT.match(user):
            raise CloudError(
                "InvalidAMIAttributeItemValue", f'Invalid attribute item value "{user}" for userId'
            )
        existing = s.get(LaunchPermission, (image.id, user))
        if add and existing is None and user != image.account_id:
            s.add(LaunchPermission(image_id=image.id, account_id=user))
        elif not add and existing is not None:
            s.delete(existing)


@EC2.operation()
def modify_image_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    image = _owned_image(ctx, p["ImageId"])
    s: Session = ctx.session
    attribute = p.get("Attribute")
    description = (p.get("Description") or {}).get("Value")
    if description is None and attribute == "description":
        description = p.get("Value")
    if description is not None:
        if len(description) > 255:
            raise CloudError("InvalidParameterValue", "Descriptions are at most 255 characters.")
        image.description = description
        return {}
    permission = p.get("LaunchPermission") or {}
    changes: list[tuple[dict[str, Any], bool]] = [(g, True) for g in permission.get("Add", [])]
    changes += [(g, False) for g in permission.get("Remove", [])]
    operation = p.get("OperationType")
    if operation or p.get("UserIds") or p.get("UserGroups"):  # the older flat form
        if operation not in ("add", "remove"):
            raise CloudError("InvalidParameterValue", "OperationType must be add or remove.")
        add = operation == "add"
        changes += [({"UserId": u}, add) for u in p.get("UserIds", [])]
        changes += [({"Group": g}, add) for g in p.get("UserGroups", [])]
    if not changes:
        raise CloudError(
            "MissingParameter",
            "Say what to change: Description, LaunchPermission, or OperationType with UserIds.",
        )
    for grant, add in changes:
        _grant(s, image, grant, add)
    return {}


@EC2.operation()
def reset_image_attribute(ctx: RequestContext, p: dict[str, Any]) -> dict[str, Any]:
    if p["Attribute"] != "launchPermission":
        raise CloudError(
            "InvalidParameterValue", f"Value ({p['Attribute']}) for parameter attribute is invalid."
        )
    image = _owned_image(ctx, p["ImageId"])
    image.is_public = False
    ctx.session.execute(delete(LaunchPermission).where(LaunchPermission.image_id == image.id))
    return {}
