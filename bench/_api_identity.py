"""bench/api.py's identity rows: STS AssumeRole, and instance-metadata GETs through Mallee's node
metadata proxy, through the CLC's metadata rpc alone, and on moto's server; what each server is given
for them (a user, roles, an instance) and their requests.

The rpc refuses a request it has served before (its nonce), so its rows cannot replay one: each
send is sealed anew, as the node's rpc client does, by the Python client (SignedRequest.fresh).

Mallee's metadata proxy knows a guest by the source address of its connection. The bench's Mallee
runs the fake VPC network, whose metadata listener is a loopback socket, so the bench launches the
instance with this machine's own address as its private address (in a VPC made around it): a
connection from that address to the listener is, to the proxy, the guest's. wrk cannot choose the
address it connects from, so the metadata rows use the Python client, on both servers alike.
"""

from __future__ import annotations

import http.client
import ipaddress
import json
import re
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from xml.etree import ElementTree

import botocore.exceptions
import msgspec
from _api_common import (
    LAUNCH_TIMEOUT,
    Case,
    query_answer,
    register_image,
    run_instances,
    send_once,
    sign_query,
    wait_running,
)
from _harness import LOOPBACK, Target, boto_client
from _loadgen import LoadSettings, SignedRequest, run_python

from mallee.rpc import cloud as cloud_rpc
from mallee.rpc import sealing
from mallee.rpc.contract import CONTRACT_HEADER, encode
from mallee.rpc.transport import DATE_HEADER, NONCE_HEADER, PREFIX, SEALED, load_key

IAM_API_VERSION = "2010-05-08"
STS_API_VERSION = "2011-06-15"
ACCOUNT = "bench-identity"  # the account Mallee's identity rows run in
SESSION_NAME = "bench"
IMDS_HOST = "169.254.169.254"
IMDS_ROLE = "default-role"  # the role moto's metadata serves; Mallee's instance profile holds one so named
TOKEN_TTL = "21600"
# The metadata rows: the same path on both servers.
IMDS_PATHS = (
    ("IMDS instance-id", "/latest/meta-data/instance-id"),
    ("IMDS credentials", f"/latest/meta-data/iam/security-credentials/{IMDS_ROLE}"),
)
PROXY_READY_TIMEOUT = 30.0
PYTHON_CLIENT = ("python", run_python)


@dataclass(frozen=True)
class Guest:
    """Where a guest's metadata requests go, from which address, with which IMDSv2 token."""

    url: str
    source: str | None
    token: str
    instance_id: str | None  # what instance-id answers; None: anything (moto's is made up)


@dataclass(frozen=True)
class ClcMetadata:
    """The CLC's metadata rpc as a node calls it for the instance."""

    url: str
    key: bytes
    vpc_id: str
    private_ip: str
    instance_id: str


@dataclass
class Identity:
    """What one server was given for the identity rows."""

    caller: Target  # the server, with the keys of the IAM user that assumes the role
    role_arn: str
    guest: Guest | None  # None: the metadata rows through the proxy cannot be measured (see notes)
    clc: ClcMetadata | None = None  # Mallee only
    optional: bool = False  # a baseline revision's: rows it cannot answer are left out, with a note
    notes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# What each server is given


def prepare_mallee(admin: Target, home: Path, optional: bool = False) -> Identity:
    """On a Mallee started in `home` (see _harness.start_mallee): an account of its own, with a user,
    a role trusting that user, and one instance whose profile holds the role IMDS_ROLE, launched
    with this machine's address as its private address when that can be done."""
    root = _bench_account(admin)
    caller, role_arn = _caller_and_role(root)
    iam = boto_client("iam", root)
    iam.create_role(RoleName=IMDS_ROLE, AssumeRolePolicyDocument=_trust({"Service": "ec2.amazonaws.com"}))
    iam.create_instance_profile(InstanceProfileName="bench")
    iam.add_role_to_instance_profile(InstanceProfileName="bench", RoleName=IMDS_ROLE)
    notes: list[str] = []
    ec2 = boto_client("ec2", root)
    address, placement = _placement_at_host_address(ec2, admin.name, notes)
    launch: dict[str, Any] = {
        "ImageId": register_image(root, f"{ACCOUNT}-images"),
        "InstanceType": "t1.micro",
    }
    launch |= {"MinCount": 1, "MaxCount": 1, "IamInstanceProfile": {"Name": "bench"}, **placement}
    deadline = time.monotonic() + LAUNCH_TIMEOUT
    (instance,) = wait_running(ec2, run_instances(ec2, deadline, **launch), deadline, admin.name)
    instance_id, vpc_id = instance["InstanceId"], instance["VpcId"]
    key = load_key(home / "mallee-data" / "deployment.key")
    clc = ClcMetadata(admin.endpoint, key, vpc_id, instance["PrivateIpAddress"], instance_id)
    guest = None
    if address:
        url = f"http://{LOOPBACK}:{_metadata_port(home / 'mallee.log', vpc_id)}"
        try:
            guest = Guest(url, address, _imds_token(url, address), instance_id)
        except OSError as exc:  # this machine does not let a socket on that address reach loopback
            notes.append(f"{admin.name}: cannot connect from {address} to the metadata listener: {exc}")
    if guest is None:
        notes.append(f"{admin.name}: metadata GETs through the node's proxy not measured, only the CLC's rpc")
    return Identity(caller, role_arn, guest, clc, optional, notes)


def _placement_at_host_address(ec2: Any, server: str, notes: list[str]) -> tuple[str | None, dict[str, str]]:
    """This machine's address and RunInstances parameters putting an instance at it (a VPC and a
    subnet around it), or (None, {}) with a note saying why not."""
    address = host_address()
    block = subnet_around(address) if address else None
    if not address or not block:
        notes.append(f"{server}: no IPv4 address of this machine can be an instance's private address")
        return None, {}
    try:
        vpc_id = ec2.create_vpc(CidrBlock=str(block))["Vpc"]["VpcId"]
        subnet_id = ec2.create_subnet(VpcId=vpc_id, CidrBlock=str(block))["Subnet"]["SubnetId"]
    except botocore.exceptions.ClientError as exc:
        notes.append(f"{server}: no VPC around this machine's address {address}: {exc}")
        return None, {}
    return address, {"SubnetId": subnet_id, "PrivateIpAddress": address}


def prepare_moto(moto: Target) -> Identity:
    """On moto's server: the same user and role (moto does not enforce the trust policy). Its
    metadata needs nothing: it serves made-up values and IMDS_ROLE's credentials to anyone."""
    caller, role_arn = _caller_and_role(moto)
    return Identity(caller, role_arn, Guest(moto.endpoint, None, _imds_token(moto.endpoint, None), None))


def host_address() -> str | None:
    """This machine's IPv4 address on its default route (no packet is sent), or None. A socket bound
    to it can connect to a loopback listener."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect(("198.51.100.1", 9))  # TEST-NET-2: only picks the route
        except OSError:
            return None
        address = str(sock.getsockname()[0])
    ip = ipaddress.IPv4Address(address)
    if ip.is_loopback or ip.is_link_local or ip.is_multicast or ip.is_reserved or ip.is_unspecified:
        return None
    return address


def subnet_around(address: str) -> ipaddress.IPv4Network | None:
    """The smallest block, /28 to /16 (what a VPC and a subnet may be), holding `address` where it
    is none of the addresses a subnet keeps for itself (its first four and its last)."""
    ip = ipaddress.IPv4Address(address)
    for prefix in range(28, 15, -1):
        block = ipaddress.IPv4Network(f"{address}/{prefix}", strict=False)
        if 4 <= int(ip) - int(block.network_address) <= block.num_addresses - 2:
            return block
    return None


def _trust(principal: dict[str, str]) -> str:
    statement = {"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"}
    return json.dumps({"Version": "2012-10-17", "Statement": [statement]})


def _caller_and_role(root: Target) -> tuple[Target, str]:
    """A user `bench` with an access key, and a role `bench-assume` whose trust policy names that
    user (so, in the user's own account, it may assume the role with no policy of its own)."""
    iam = boto_client("iam", root)
    user_arn = iam.create_user(UserName="bench")["User"]["Arn"]
    key = iam.create_access_key(UserName="bench")["AccessKey"]
    role = iam.create_role(RoleName="bench-assume", AssumeRolePolicyDocument=_trust({"AWS": user_arn}))
    caller = replace(root, access_key=key["AccessKeyId"], secret_key=key["SecretAccessKey"])
    return caller, str(role["Role"]["Arn"])


def _iam_call(target: Target, params: dict[str, str]) -> ElementTree.Element:
    request = sign_query(target, "iam", {**params, "Version": IAM_API_VERSION})
    status, payload = send_once(request)
    if status != 200:
        raise RuntimeError(f"{target.name}: IAM {params['Action']} answered {status}: {payload[:500]!r}")
    return ElementTree.fromstring(payload)


def _bench_account(admin: Target) -> Target:
    """A new account (the cloud administrator's IAM CreateAccount) and its root's keys, as a target."""
    _iam_call(admin, {"Action": "CreateAccount", "AccountName": ACCOUNT})
    answer = _iam_call(admin, {"Action": "CreateAccessKey", "DelegateAccount": ACCOUNT})
    key_id, secret = answer.findtext(".//{*}AccessKeyId"), answer.findtext(".//{*}SecretAccessKey")
    if not key_id or not secret:
        raise RuntimeError(f"{admin.name}: no access key for account {ACCOUNT}")
    return replace(admin, access_key=key_id, secret_key=secret)


def _metadata_port(log_path: Path, vpc_id: str) -> int:
    """The port of the VPC's metadata listener, from the node's `metadata service of <vpc> on
    ('127.0.0.1', <port>)` log line (the fake network binds any free port)."""
    pattern = re.compile(rf"metadata service of {re.escape(vpc_id)} on \('127\.0\.0\.1', (\d+)\)")
    deadline = time.monotonic() + PROXY_READY_TIMEOUT
    while time.monotonic() < deadline:
        found = pattern.findall(log_path.read_text(errors="replace"))
        if found:
            return int(found[-1])
        time.sleep(0.2)
    raise RuntimeError(f"no metadata service for {vpc_id} in {log_path} after {PROXY_READY_TIMEOUT:.0f} s")


def _imds_token(url: str, source: str | None) -> str:
    """An IMDSv2 session token (PUT /latest/api/token), asked for from `source`."""
    headers = {"Host": IMDS_HOST, "X-aws-ec2-metadata-token-ttl-seconds": TOKEN_TTL}
    request = SignedRequest(url + "/latest/api/token", headers, "", method="PUT", source=source)
    status, payload = send_once(request)
    if status != 200 or not payload:
        raise RuntimeError(
            f"IMDSv2 token from {url} (from {source or 'loopback'}): {status} {payload[:200]!r}"
        )
    return payload.decode()


# ---------------------------------------------------------------------------------------------
# Requests and their checks


def identity_cases(
    prepared: Sequence[tuple[Target, Identity]], settings: LoadSettings, notes: list[str]
) -> list[list[Case]]:
    """The identity rows, one group per operation with a case per server (and per part of Mallee
    measured). A baseline's case that does not answer as it should is left out, with a note."""
    groups = [
        [Case("AssumeRole", t, t.name, partial(_assume_role, i), _check_assume_role) for t, i in prepared]
    ]
    for operation, path in IMDS_PATHS:
        groups.append([case for t, i in prepared for case in _imds_cases(operation, path, t, i)])
    notes += [note for _, i in prepared for note in i.notes]
    optional = {t.name for t, i in prepared if i.optional}
    return [[c for c in group if c.target.name not in optional or _answers(c, notes)] for group in groups]


def _imds_cases(operation: str, path: str, target: Target, ident: Identity) -> list[Case]:
    """A guest's GET of `path` through the server's metadata service and, on Mallee, the CLC's rpc
    for it alone (target label `<server> rpc`)."""
    cases = []
    if ident.guest is not None:
        get = partial(_imds_get, ident.guest, path)
        check = partial(_check_imds, path, ident.guest.instance_id)
        cases.append(Case(operation, target, target.name, get, check, PYTHON_CLIENT))
    if ident.clc is not None:
        call = partial(_rpc_request, ident.clc, path)
        check = partial(_check_rpc, path, ident.clc)
        cases.append(Case(operation, target, f"{target.name} rpc", call, check, PYTHON_CLIENT))
    return cases


def _answers(case: Case, notes: list[str]) -> bool:
    try:
        case.check(case.request())
    except (OSError, RuntimeError) as exc:
        notes.append(f"{case.operation} on {case.label} not measured: {exc}")
        return False
    return True


def _assume_role(ident: Identity) -> SignedRequest:
    params = {
        "Action": "AssumeRole",
        "Version": STS_API_VERSION,
        "RoleArn": ident.role_arn,
        "RoleSessionName": SESSION_NAME,
    }
    return sign_query(ident.caller, "sts", params)


def _check_assume_role(request: SignedRequest) -> tuple[int, int]:
    return query_answer(request, "AssumeRoleResponse", "AccessKeyId")


def _imds_get(guest: Guest, path: str) -> SignedRequest:
    """An IMDSv2 GET, as a guest's SDK sends it (the token header; Host the metadata address)."""
    headers = {"Host": IMDS_HOST, "X-aws-ec2-metadata-token": guest.token}
    return SignedRequest(guest.url + path, headers, "", method="GET", source=guest.source)


def _check_imds(path: str, instance_id: str | None, request: SignedRequest) -> tuple[int, int]:
    status, payload = send_once(request)
    if status != 200 or not _imds_body_ok(path, payload, instance_id):
        raise RuntimeError(f"GET {path} from {request.url}: {status} {payload[:300]!r}")
    return 1, len(payload)


def _rpc_request(rpc: ClcMetadata, path: str) -> SignedRequest:
    """The CLC's `metadata` rpc as the node's proxy sends it for a guest with a valid token, sealed
    for one send, naming how to seal the next (the server serves a nonce once)."""
    return replace(_sealed_rpc(rpc, path), fresh=partial(_sealed_rpc, rpc, path))


def _sealed_rpc(rpc: ClcMetadata, path: str) -> SignedRequest:
    """One `metadata` rpc exactly as rpc.transport.Client sends it: sealed with the deployment key
    under a new nonce and the current date, and a new connection per call."""
    body = encode(
        cloud_rpc.MetadataRequest(private_ip=rpc.private_ip, path=path, vpc_id=rpc.vpc_id, with_token=True)
    )
    binding = sealing.Binding.new(PREFIX + cloud_rpc.METADATA.name, str(time.time()), cloud_rpc.API.header)
    headers = {
        "Host": urlsplit(rpc.url).netloc,
        "Content-Type": SEALED,
        DATE_HEADER: binding.date,
        NONCE_HEADER: binding.nonce,
        CONTRACT_HEADER: binding.contract,
        "Connection": "close",  # urllib's, which the node's rpc client uses
    }
    sealed = sealing.seal_request(rpc.key, binding, body).decode("latin-1")  # binary, as it is
    return SignedRequest(rpc.url.rstrip("/") + binding.path, headers, sealed, encoding="latin-1")


def _check_rpc(path: str, rpc: ClcMetadata, request: SignedRequest) -> tuple[int, int]:
    """Send the rpc once; its answer must be sealed to it, and hold the instance's metadata."""
    where = f"metadata rpc for {path} on {request.url}"
    status, answer_nonce, sealed = _send_rpc(request)
    if answer_nonce is None:
        raise RuntimeError(f"{where}: an unsealed answer: {status} {sealed[:300]!r}")
    headers = request.headers
    binding = sealing.Binding(
        request.path, headers[DATE_HEADER], headers[NONCE_HEADER], headers[CONTRACT_HEADER]
    )
    try:
        payload = sealing.open_response(rpc.key, binding, status, answer_nonce, sealed)
    except sealing.SealError as exc:
        raise RuntimeError(f"{where}: {exc}") from exc
    if status != 200:
        raise RuntimeError(f"{where}: {status} {payload[:300]!r}")
    try:
        answer = cloud_rpc.METADATA.decode_response(payload)
    except msgspec.MsgspecError as exc:
        raise RuntimeError(f"{where}: {exc}") from exc
    if answer.status != 200 or not _imds_body_ok(path, answer.body, rpc.instance_id):
        raise RuntimeError(f"{where}: {answer.status} {answer.body[:300]!r}")
    return 1, len(sealed)


def _send_rpc(request: SignedRequest) -> tuple[int, str | None, bytes]:
    """Send a sealed rpc once: (status, the answer's nonce header or None, its body as sent)."""
    conn = http.client.HTTPConnection(request.host, request.port, timeout=10)
    try:
        conn.request(
            request.method, request.path, body=request.body.encode(request.encoding), headers=request.headers
        )
        response = conn.getresponse()
        return response.status, response.getheader(NONCE_HEADER), response.read()
    finally:
        conn.close()


def _imds_body_ok(path: str, body: bytes, instance_id: str | None) -> bool:
    if path.endswith("/instance-id"):
        return bool(body) and instance_id in (None, body.decode())
    try:
        document = json.loads(body)
    except ValueError:
        return False
    return bool(document.get("AccessKeyId")) and document.get("Code", "Success") == "Success"
