"""A real all-in-one cloud (`mallee up` in a temporary data directory on free loopback ports),
shared by the functional tests, and helpers to act as its administrator or as a new account."""

from __future__ import annotations

import configparser
import datetime as dt
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import boto3
from botocore.config import Config as BotoConfig

from mallee.cli.client import AdminClient
from mallee.core import config
from mallee.db.session import Database
from mallee.services.clc.tables import AccessKey

VENV_BIN = Path(sys.executable).parent
T = TypeVar("T")
BOTO = BotoConfig(retries={"max_attempts": 1}, connect_timeout=5, read_timeout=30)
BODY_IDLE_SECONDS = 5  # the test clouds' patience with a request body that stops coming
HEADER_SECONDS = 5  # and with a request head that does not come whole
# boto3's default session, and the environment `admin_api` borrows, are not for two threads at
# once (crash tests drive several clouds at a time).
_SHARED = threading.RLock()


def _free_port_base(count: int = 6) -> int:
    for _ in range(200):
        # Below the kernel's ephemeral ports (32768 and up): a client socket must never take one
        # of a cloud's ports between this check and the cloud binding it.
        base = 20000 + secrets.randbelow(32768 - 20000 - count)
        socks = []
        try:
            for port in range(base, base + count):
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                socks.append(s)
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port range")


@dataclass
class Keys:
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    account_id: str = ""


@dataclass
class Cloud:
    endpoint: str
    region: str
    data_dir: Path
    env: dict[str, str]
    admin: Keys
    process: subprocess.Popen[bytes]
    log_path: Path

    def client(self, service: str, keys: Keys | None = None, **kwargs: Any) -> Any:
        keys = keys or self.admin
        with _SHARED:
            return boto3.client(
                service,
                endpoint_url=self.endpoint,
                region_name=self.region,
                aws_access_key_id=keys.access_key_id,
                aws_secret_access_key=keys.secret_access_key,
                aws_session_token=keys.session_token,
                config=kwargs.pop("config", BOTO),
                **kwargs,
            )

    def set_key_expiry(self, access_key_id: str, expires: dt.datetime) -> None:
        """Move a temporary key's expiry in the CLC's database of record, whichever engine it is
        (waiting out a session is no test)."""
        url = config.load(self.data_dir, environ=self.env).database_url_for("clc")
        db = Database(url)
        try:
            with db.session() as s:
                s.query(AccessKey).filter(AccessKey.id == access_key_id).update({AccessKey.expires: expires})
        finally:
            db.dispose()

    def run(
        self,
        program: str,
        *args: str,
        check: bool = False,
        env: dict[str, str] | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(VENV_BIN / program), *args],
            env={**self.env, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=check,
        )

    def admin_api(self) -> AdminClient:
        with _SHARED:
            old = {k: os.environ.get(k) for k in ("AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE")}
            os.environ.update({k: self.env[k] for k in old})
            try:
                return AdminClient.from_profile("mallee")
            finally:
                for k, v in old.items():
                    if v is None:
                        os.environ.pop(k, None)
                    else:
                        os.environ[k] = v

    def new_account(self, prefix: str = "acct") -> Keys:
        """A fresh account (so tests do not see each other's users) and its root's access key."""
        name = f"{prefix}-{secrets.token_hex(4)}"
        api = self.admin_api()
        account_id = api.call("iam", "CreateAccount", {"AccountName": name}).findtext(".//AccountId") or ""
        key = api.call("iam", "CreateAccessKey", {"DelegateAccount": name}).find(".//AccessKey")
        assert key is not None
        return Keys(
            key.findtext("AccessKeyId", ""), key.findtext("SecretAccessKey", ""), account_id=account_id
        )

    def service_pid(self, service: str) -> int:
        """The current pid of a one-process service (see `service_pids`)."""
        (pid,) = self.service_pids(service)
        return pid

    def service_pids(self, service: str) -> list[int]:
        """The current pid of each of the service's processes (Walrus runs as several workers)."""
        found = re.findall(rf"started {service}(?: worker (\d+))? \(pid (\d+)\)", self.log())
        return list({worker: int(pid) for worker, pid in found}.values())

    def wait_restarted(
        self, service: str, old_pids: list[int], answers: Callable[[], object], timeout: float = 30
    ) -> None:
        """Wait until the supervisor restarted each of `service`'s processes that were `old_pids`
        and `answers()` no longer raises."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not set(self.service_pids(service)) & set(old_pids):
                try:
                    answers()
                    return
                except Exception:
                    pass
            time.sleep(0.1)
        raise AssertionError(f"{service} did not come back:\n" + self.log()[-3000:])

    @property
    def port_base(self) -> int:
        return int(self.endpoint.rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def blob_count(self) -> int:
        """How many blob files Walrus's filesystem object store holds."""
        return sum(1 for path in (self.data_dir / "walrus" / "blobs").rglob("*") if path.is_file())

    def blobs_settle_at(self, count: int) -> bool:
        """Whether the blob count reaches `count`: a blob is written before its request is answered,
        but one a commit stopped pointing at is removed just after it, by the sweeper."""
        deadline = time.monotonic() + 10
        while self.blob_count() != count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.blob_count() == count


def aws_run(cloud: Cloud, *args: str, keys: Keys | None = None) -> subprocess.CompletedProcess[str]:
    """`aws --profile mallee --output json ARGS` as the cloud's administrator, or as `keys` given in
    the environment as a user would (with a role session's token)."""
    env, who = None, ["--profile", "mallee"]
    if keys is not None:  # an explicit profile would win over keys in the environment
        env = {"AWS_ACCESS_KEY_ID": keys.access_key_id, "AWS_SECRET_ACCESS_KEY": keys.secret_access_key}
        if keys.session_token:
            env["AWS_SESSION_TOKEN"] = keys.session_token
        who = ["--endpoint-url", cloud.endpoint, "--region", cloud.region]
    return cloud.run("aws", *who, "--output", "json", *args, env=env)


def aws(cloud: Cloud, *args: str, keys: Keys | None = None) -> Any:
    """`aws_run`'s JSON answer; fails the test when the CLI fails."""
    result = aws_run(cloud, *args, keys=keys)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout) if result.stdout.strip() else None


def aws_refusal(cloud: Cloud, *args: str, keys: Keys | None = None) -> tuple[str, str]:
    """The AWS error code and message the `aws` CLI prints when the cloud refuses `aws ARGS`."""
    result = aws_run(cloud, *args, keys=keys)
    printed = re.search(r"An error occurred \(([\w.]+)\) when calling the \w+ operation: (.+)", result.stderr)
    assert result.returncode == 255 and printed, (result.returncode, result.stderr)
    return printed[1], printed[2].strip()


def user_keys(cloud: Cloud, root: Keys, name: str | None = None, allow: list[str] | None = None) -> Keys:
    """A new IAM user of `root`'s account (named `name`, or at random) with an access key, and an
    inline policy allowing the actions `allow` on every resource."""
    iam = cloud.client("iam", root)
    name = name or f"u-{secrets.token_hex(3)}"
    iam.create_user(UserName=name)
    if allow:
        document = {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": allow, "Resource": "*"}],
        }
        iam.put_user_policy(UserName=name, PolicyName="allow", PolicyDocument=json.dumps(document))
    key = iam.create_access_key(UserName=name)["AccessKey"]
    return Keys(key["AccessKeyId"], key["SecretAccessKey"], account_id=root.account_id)


def wait_for(what: str, check: Callable[[], Any], timeout: float, every: float = 1.0) -> Any:
    """`check()`'s first true value, asked every `every` s; fails the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)


def _node_known(cloud: Cloud) -> bool:
    """Whether the zone counts its node's capacity yet (the cluster polls its node after both
    started): until then every instance type fits 0 times."""
    zones = cloud.client("ec2").describe_availability_zones(ZoneNames=["verbose"])["AvailabilityZones"]
    counts = [z["State"].split() for z in zones if z["ZoneName"].startswith("|- ")]
    return any(c[0].isdigit() and c[2] != "0000" for c in counts)  # "free / max cpu ram disk"


def _wait_ready(cloud: Cloud, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        if cloud.process.poll() is not None:
            raise RuntimeError(f"mallee up exited early:\n{cloud.log()}")
        try:
            with urllib.request.urlopen(cloud.endpoint + "/healthz", timeout=1):
                pass
            root = cloud.admin_api().call("ec2", "DescribeServices")
            states = [item.findtext("state") for item in root.iterfind("./serviceStatusSet/item")]
            if len(states) == 5 and all(s == "ENABLED" for s in states) and _node_known(cloud):
                return
            last = states
        except Exception as exc:  # not up yet
            last = exc
        time.sleep(0.2)
    raise RuntimeError(f"cloud not ready after {timeout}s (last: {last}):\n{cloud.log()}")


def start_cloud(
    base_dir: Path,
    extra_env: dict[str, str] | None = None,
    port_base: int | None = None,
    up_args: tuple[str, ...] = (),
    host: str = "127.0.0.1",
) -> Cloud:
    """`extra_env`: more environment for `mallee up` (MALLEE_* settings such as MALLEE_S3_DOMAIN).
    `port_base`: the ports of a cloud started before in `base_dir` (its aws profile names them).
    `up_args`: options of `mallee up` (`--verbose`). `host`: the address its services listen on
    (another host's node controller reaches the cloud there)."""
    port_base = port_base or _free_port_base()
    env = dict(os.environ)
    env.update(
        MALLEE_DATA_DIR=str(base_dir / "data"),
        MALLEE_PORT_BASE=str(port_base),
        MALLEE_HOST=host,
        MALLEE_CLC_HOST=host,
        MALLEE_HEARTBEAT_SECONDS="1",
        # API tests run the node controller on its fake drivers; tests/e2e boots real VMs.
        MALLEE_HYPERVISOR="fake",
        MALLEE_NETWORK="fake",
        MALLEE_BLOCKSTORE="fake",
        MALLEE_NODE_DIR=str(base_dir / "nc"),
        MALLEE_SEED_IMAGE="false",  # tests publish the images they need
        MALLEE_WALRUS_WORKERS="2",  # S3 tests run against two Walrus workers sharing one database
        MALLEE_BODY_IDLE_SECONDS=str(BODY_IDLE_SECONDS),
        MALLEE_HEADER_SECONDS=str(HEADER_SECONDS),
        MALLEE_NODE_CORES="16",
        MALLEE_NODE_MEMORY_MIB="16384",
        MALLEE_NODE_DISK_GIB="200",
        AWS_CONFIG_FILE=str(base_dir / "aws" / "config"),
        AWS_SHARED_CREDENTIALS_FILE=str(base_dir / "aws" / "credentials"),
        PATH=f"{VENV_BIN}:{env.get('PATH', '')}",
    )
    env.pop("AWS_PROFILE", None)
    env.update(extra_env or {})
    log_path = base_dir / "mallee-up.log"
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "mallee.supervisor", "up", *up_args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 30
    creds = configparser.RawConfigParser()
    while time.monotonic() < deadline and not creds.has_section("mallee"):
        creds.read(base_dir / "aws" / "credentials")
        time.sleep(0.1)
    if not creds.has_section("mallee"):
        process.kill()
        raise RuntimeError(f"no admin profile written:\n{log_path.read_text()}")
    admin = Keys(creds.get("mallee", "aws_access_key_id"), creds.get("mallee", "aws_secret_access_key"))
    cloud = Cloud(f"http://{host}:{port_base}", "mallee-1", base_dir / "data", env, admin, process, log_path)
    try:
        _wait_ready(cloud, 60)
    except BaseException:
        stop_cloud(cloud)
        raise
    return cloud


def mallee_down(cloud: Cloud, *args: str) -> subprocess.CompletedProcess[str]:
    """`mallee down ARGS` of the running `cloud`. Its `mallee up` is this process's child, reaped
    here as soon as it exits, as a shell would: `mallee down` waits until it is gone, and to it a
    zombie looks alive (until it gives up waiting, after 30 s)."""
    threading.Thread(target=cloud.process.wait, name="reap mallee up", daemon=True).start()
    return cloud.run("mallee", "down", *args)


def stop_cloud(cloud: Cloud) -> int | None:
    return stop_process(cloud.process)


def stop_process(process: subprocess.Popen[bytes]) -> int | None:
    """SIGTERM the process (by its pid), SIGKILL it if it is not gone in 20 s; its exit code."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def vpc_network_env(tag: str) -> dict[str, str]:
    """A real test cloud's VPC network settings, of its own on this host: a node prefix (`tag`: 1–3
    characters of [a-z0-9], a letter first), a public bridge and a public range no other test cloud
    uses. The node gives the host the range's first address on that bridge, so tests reach
    instances at their public addresses; nothing is routed anywhere else."""
    suffix = secrets.token_hex(2)
    public = f"198.18.{secrets.randbelow(250)}"
    return {
        "MALLEE_NETWORK": "vpc",
        "MALLEE_VPC_PREFIX": f"{tag}{suffix}"[:4],
        "MALLEE_PUBLIC_BRIDGE": f"mlp{tag}{suffix}",
        "MALLEE_PUBLIC_CIDR": f"{public}.0/24",
        "MALLEE_PUBLIC_IPS": f"{public}.16-{public}.254",
    }


def allow_ssh(cloud: Cloud, keys: Keys | None = None) -> None:
    """Let SSH in to instances of the default security group (of `keys`' account, else the
    administrator's), from anywhere, as a user would before logging in."""
    groups = aws(
        cloud, "ec2", "describe-security-groups", "--filters", "Name=group-name,Values=default", keys=keys
    )
    for group in groups["SecurityGroups"]:
        aws(cloud, "ec2", "authorize-security-group-ingress", "--group-id", group["GroupId"],
            "--protocol", "tcp", "--port", "22", "--cidr", "0.0.0.0/0", keys=keys)  # fmt: skip


def retrying(call: Callable[[], T], timeout: float = 90) -> T:
    """`call()`, again while the CLC is down or restarting (a crash test's kill may cut a request
    off); a 4xx answer is raised at once."""
    from botocore.exceptions import (
        ClientError,
        ConnectionClosedError,
        EndpointConnectionError,
        ReadTimeoutError,
    )

    deadline = time.monotonic() + timeout
    while True:
        try:
            return call()
        except (EndpointConnectionError, ConnectionClosedError, ReadTimeoutError):
            pass
        except ClientError as err:
            if err.response["ResponseMetadata"]["HTTPStatusCode"] < 500:
                raise
        assert time.monotonic() < deadline, "the cloud did not come back"
        time.sleep(0.1)
