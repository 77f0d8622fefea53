"""The administrator commands of `mallee`, each a small client of the public API."""

from __future__ import annotations

import argparse
import getpass
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

from mallee.cli.client import AdminClient, ApiError
from mallee.cli.table import table
from mallee.core import awsprofile
from mallee.core import config as config_mod


def account(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    if args.account_command == "create":
        root = client.call("iam", "CreateAccount", {"AccountName": args.name})
        print(f"{root.findtext('.//AccountName')}\t{root.findtext('.//AccountId')}")
    elif args.account_command == "list":
        root = client.call("iam", "ListAccounts")
        for member in root.iterfind(".//Accounts/member"):
            print(f"{member.findtext('AccountName')}\t{member.findtext('AccountId')}")
    else:
        params = {"AccountName": args.name}
        if args.recursive:
            params["Recursive"] = "true"
        client.call("iam", "DeleteAccount", params)
    return 0


def credentials(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    params = {"DelegateAccount": args.account}
    if args.user:
        params["UserName"] = args.user
    key = client.call("iam", "CreateAccessKey", params).find(".//AccessKey")
    assert key is not None
    caller = client.call("iam", "ListAccounts")
    account_id = next(
        (
            m.findtext("AccountId", "")
            for m in caller.iterfind(".//Accounts/member")
            if args.account in (m.findtext("AccountName"), m.findtext("AccountId"))
        ),
        "",
    )
    name = args.profile_name or (f"{args.account}-{args.user}" if args.user else args.account)
    cfg = config_mod.load(args.data_dir)
    akid, secret = key.findtext("AccessKeyId", ""), key.findtext("SecretAccessKey", "")
    awsprofile.write_profile(
        cfg.aws_config_file, cfg.aws_credentials_file, name, akid, secret, client.region, client.endpoint_url
    )
    eucarc: Path = args.eucarc or cfg.data_dir / "credentials" / f"{name}.eucarc"
    awsprofile.write_eucarc(eucarc, akid, secret, client.region, client.endpoint_url, account_id)
    print(f"wrote aws profile '{name}' ({cfg.aws_config_file}) and {eucarc}")
    print(f"  aws --profile {name} sts get-caller-identity")
    return 0


def console_password(args: argparse.Namespace) -> int:
    """Give an IAM user of any account a console password, as the cloud administrator acting in
    that account (DelegateAccount): CreateLoginProfile, or UpdateLoginProfile when it has one."""
    password = _read_password(args.password_stdin)
    if password is None:
        return 1
    client = AdminClient.from_profile(args.profile)
    params = {
        "DelegateAccount": args.account,
        "UserName": args.user,
        "Password": password,
        "PasswordResetRequired": str(args.reset_required).lower(),
    }
    try:
        client.call("iam", "CreateLoginProfile", params)
        done = "set"
    except ApiError as exc:
        if exc.code != "EntityAlreadyExists":
            raise
        client.call("iam", "UpdateLoginProfile", params)
        done = "changed"
    then = " (to be changed at the next sign-in)" if args.reset_required else ""
    print(f"{args.account}: console password of user {args.user} {done}{then}")
    return 0


def _read_password(from_stdin: bool) -> str | None:
    """The new password: standard input's first line, or typed twice at a prompt that does not
    echo it; None (and why, on stderr) when there is none or the two differ."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = getpass.getpass("New console password: ")
        if getpass.getpass("Again: ") != password:
            print("mallee: the two passwords differ; nothing changed", file=sys.stderr)
            return None
    if not password:
        print("mallee: no password given; nothing changed", file=sys.stderr)
        return None
    return password


def instance_type(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    if args.type_command == "set":
        params: dict[str, str] = {"Name": args.name}
        for flag, member in (("cpus", "Cpu"), ("memory", "Memory"), ("disk", "Disk")):
            value = getattr(args, flag)
            if value is not None:
                params[member] = str(value)
        if args.reset:
            params["Reset"] = "true"
        client.call("ec2", "ModifyInstanceTypeAttribute", params)
    root = client.call("ec2", "DescribeInstanceTypes")
    rows = [
        [
            item.findtext("instanceType", ""),
            item.findtext("vCpuInfo/defaultVCpus", ""),
            item.findtext("memoryInfo/sizeInMiB", ""),
            item.findtext("instanceStorageInfo/totalSizeInGB", ""),
        ]
        for item in root.iterfind("./instanceTypeSet/item")
    ]
    if args.type_command == "set":
        rows = [r for r in rows if r[0] == args.name]
    print(table(rows, ["TYPE", "CPUS", "MEMORY_MIB", "DISK_GIB"]))
    return 0


def usage(args: argparse.Namespace) -> int:
    root = AdminClient.from_profile(args.profile).call("iam", "ListAccountUsage")
    rows = [
        [
            m.findtext("AccountName", ""),
            m.findtext("AccountId", ""),
            m.findtext("Buckets", "0"),
            m.findtext("Objects", "0"),
            m.findtext("Bytes", "0"),
            m.findtext("MaxObjects") or "-",
            m.findtext("MaxBytes") or "-",
        ]
        for m in root.iterfind(".//Accounts/member")
    ]
    print(table(rows, ["ACCOUNT", "ID", "BUCKETS", "OBJECTS", "BYTES", "MAX_OBJECTS", "MAX_BYTES"]))
    return 0


def quota(args: argparse.Namespace) -> int:
    params = {"AccountName": args.account, "MaxObjects": str(args.objects), "MaxBytes": str(args.bytes)}
    AdminClient.from_profile(args.profile).call("iam", "PutAccountQuota", params)
    print(f"{args.account}: max objects {args.objects or 'unlimited'}, max bytes {args.bytes or 'unlimited'}")
    return 0


def cluster(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    params = {"Host": args.host, "Port": str(args.port), "Zone": args.zone}
    client.call("ec2", "RegisterCluster", params)
    print(f"registered zone {args.zone}: cluster controller {args.host}:{args.port} (see: mallee node list)")
    return 0


def storage(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    params = {"Host": args.host, "Port": str(args.port), "Zone": args.zone}
    client.call("ec2", "RegisterStorageController", params)
    print(f"registered the storage controller of zone {args.zone}: {args.host}:{args.port}")
    return 0


def node(args: argparse.Namespace) -> int:
    client = AdminClient.from_profile(args.profile)
    command = args.node_command
    if command == "register":
        params = {"Host": args.host, "Port": str(args.port)}
        if args.zone:
            params["Zone"] = args.zone
        client.call("ec2", "RegisterNode", params)
        print(f"registered node {args.host}:{args.port} (see: mallee node list)")
    elif command == "list":
        print(_nodes(client.call("ec2", "DescribeNodes", {"Zone": args.zone} if args.zone else {})))
    elif command == "maintenance":
        client.call(
            "ec2", "ModifyNodeMaintenance", {"Node": args.node, "Maintenance": str(not args.off).lower()}
        )
        now = "back in service" if args.off else "in maintenance: it takes no new instances"
        print(f"{args.node}: {now}")
    elif command == "evacuate":
        return _evacuated(client.call("ec2", "EvacuateNode", {"Node": args.node}))
    else:
        client.call("ec2", "DeregisterNode", {"Node": args.node})
        print(f"deregistered node {args.node}")
    return 0


def _nodes(root: ET.Element) -> str:
    rows = []
    for item in root.iterfind("./nodeSet/item"):
        row = [item.findtext(m, "") for m in ("nodeName", "zone", "state")]
        row.append(str(len(item.findall("./instanceIdSet/item"))))
        for member in ("cores", "memoryMiB", "diskGiB"):
            row.append(f"{item.findtext(f'free/{member}', '0')}/{item.findtext(f'total/{member}', '0')}")
        rows.append(row)
    header = ["NODE", "ZONE", "STATE", "INSTANCES", "CORES_FREE/TOTAL", "MEMORY_MIB_FREE/TOTAL"]
    return table(rows, [*header, "DISK_GIB_FREE/TOTAL"])


def _evacuated(root: ET.Element) -> int:
    """Print what moves and what cannot; 1 when some instance stays on the node."""
    name = root.findtext("nodeName", "")
    moving = [i.text or "" for i in root.iterfind("./movingInstanceSet/item")]
    print(f"{name}: moving {', '.join(moving)}" if moving else f"{name}: no instance to move")
    stuck = [
        (i.findtext("instanceId", ""), i.findtext("reason", ""))
        for i in root.iterfind("./unmovableInstanceSet/item")
    ]
    for instance_id, reason in stuck:
        print(f"cannot move {instance_id}: {reason}", file=sys.stderr)
    return 1 if stuck else 0
