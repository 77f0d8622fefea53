"""The Mallee side of `launch.py`: the benchmark's own `mallee up` on libvirt and VPC networking
(the instances land in the default VPC; `subnet` is the cloud's public network, on a bridge of its
own, and SSH goes to their public addresses), images published with `mallee image publish`, a key
pair, and timed launches driven with boto3 (RunInstances, DescribeInstances until running, then
SSH). The node controller's directory is watched while a launch runs, so each step of it gets a time
(see `_launch_host.boot_probes`).
"""

from __future__ import annotations

import contextlib
import ipaddress
import re
import secrets
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from _harness import ProcessSet, Target, boto_client, mallee_env, start_mallee
from _launch_host import (
    READY_GRACE,
    LaunchResult,
    Timeline,
    Watcher,
    boot_probes,
    destroy_domains,
    exists,
    qemu_pid,
    qemu_rss_mib,
    wait_event,
    wait_for_login,
)
from botocore.credentials import ReadOnlyCredentials

from mallee.cli.client import AdminClient
from mallee.drivers.network.vpc import VpcDriver

MALLEE_BIN = Path(sys.executable).parent / "mallee"
INSTANCE_TYPE = "m1.small"
POLL_API = 0.05  # DescribeInstances every 0.05 s: `running` is timed to within that
PORTS = 6  # clc, cc, nc, sc, walrus, and the metadata service


def _services_enabled(target: Target) -> bool:
    """All five services ENABLED (DescribeServices, an administrator extension)."""
    credentials = ReadOnlyCredentials(target.access_key, target.secret_key, None)
    try:
        root = AdminClient(credentials, target.endpoint, target.region).call("ec2", "DescribeServices")
    except Exception:
        return False
    states = [item.findtext("state") for item in root.iterfind("./serviceStatusSet/item")]
    return len(states) == 5 and all(state == "ENABLED" for state in states)


class Cloud:
    """One `mallee up` with real VMs. `stop` terminates what is left, stops the supervisor, then
    removes any domain it launched that is still defined and the node's network."""

    def __init__(self, procs: ProcessSet, workdir: Path, subnet: ipaddress.IPv4Network) -> None:
        self.procs, self.workdir, self.subnet = procs, workdir, subnet
        self.node_dir = workdir / "nc"
        tag = secrets.token_hex(2)
        self.prefix, self.public_bridge = f"b{tag[:3]}", f"mlbp{tag}"
        self.log = workdir / "mallee.log"
        self.instances = self.node_dir / "instances"
        self.network_dir = self.node_dir / "network"
        self.launched: set[str] = set()
        self.target: Target | None = None
        self.ec2: Any = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> Target:
        extra = {
            "MALLEE_HYPERVISOR": "libvirt",
            "MALLEE_NETWORK": "vpc",
            "MALLEE_VPC_PREFIX": self.prefix,
            "MALLEE_PUBLIC_BRIDGE": self.public_bridge,
            "MALLEE_PUBLIC_CIDR": str(self.subnet),
            "MALLEE_PUBLIC_IPS": f"{self.subnet[16]}-{self.subnet[-2]}",
            "MALLEE_NODE_DIR": str(self.node_dir),
            "MALLEE_SC_DIR": str(self.workdir / "sc"),  # the SC's volumes, removed with the workdir
            "MALLEE_NODE_CORES": "4",
            "MALLEE_NODE_MEMORY_MIB": "2048",
            "MALLEE_SEED_IMAGE": "false",  # the benchmark publishes its images itself
            "MALLEE_HEARTBEAT_SECONDS": "1",
        }
        self.target = start_mallee(
            self.procs, self.workdir, set(), _services_enabled, "all services ENABLED", extra_env=extra,
            ports=PORTS,
        )  # fmt: skip
        self.ec2 = boto_client("ec2", self.target, read_timeout=60)
        default = self.ec2.describe_security_groups(GroupNames=["default"])["SecurityGroups"][0]
        self.ec2.authorize_security_group_ingress(  # SSH in, as a user does before logging in
            GroupId=default["GroupId"],
            IpPermissions=[
                {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}
            ],
        )
        return self.target

    def stop(self) -> None:
        if self.ec2 is not None and self.launched:
            with contextlib.suppress(Exception):
                self.terminate(sorted(self.launched), timeout=30)
        self.procs.stop_all()
        # The node controller keeps its domains running when it stops (it re-adopts them on restart).
        left = destroy_domains(self.launched)
        if left:
            print(f"WARNING: could not destroy domains {left}", file=sys.stderr)
        with contextlib.suppress(Exception):  # the VPC bridges, routers, DHCP, nft tables, public bridge
            VpcDriver(self.network_dir).teardown()

    def _leases(self) -> Path:
        """The DHCP lease file of the default VPC on the node (its dnsmasq runs per VPC)."""
        found = sorted(self.network_dir.glob("vni-*/dhcp-leases"))
        return found[0] if found else self.network_dir / "vni-1" / "dhcp-leases"

    # -- images, keys, types ----------------------------------------------------------------------

    def publish(self, directory: Path, name: str) -> str:
        """`mallee image publish DIR --name NAME`; returns the machine image's ami- id."""
        return self.image_command("publish", str(directory), "--name", name)

    def image_command(self, *args: str) -> str:
        """`mallee image ARGS…` as the administrator; the machine image's ami- id it prints."""
        assert self.target is not None
        env = mallee_env(self.workdir, self.target.port)
        env.pop("AWS_PROFILE", None)
        done = subprocess.run(
            [str(MALLEE_BIN), "image", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        found = re.search(r"^machine\s+(ami-[0-9a-f]+)", done.stdout, re.MULTILINE)
        if done.returncode != 0 or found is None:
            raise RuntimeError(f"mallee image {' '.join(args)} failed: {done.stderr.strip() or done.stdout}")
        return found.group(1)

    def create_key(self, name: str) -> Path:
        material = self.ec2.create_key_pair(KeyName=name)["KeyMaterial"]
        path = self.workdir / f"{name}.pem"
        path.write_text(material)
        path.chmod(0o600)
        return path

    def instance_shape(self) -> tuple[int, int, int]:
        """vCPUs, memory (MiB) and root disk (GiB) of INSTANCE_TYPE as the cloud describes it."""
        found = self.ec2.describe_instance_types(InstanceTypes=[INSTANCE_TYPE])["InstanceTypes"][0]
        disk = found.get("InstanceStorageInfo", {}).get("TotalSizeInGB", 5)
        return int(found["VCpuInfo"]["DefaultVCpus"]), int(found["MemoryInfo"]["SizeInMiB"]), int(disk)

    # -- launches ---------------------------------------------------------------------------------

    def run(self, ami: str, key: str, count: int = 1) -> list[str]:
        reservation = self.ec2.run_instances(
            ImageId=ami, InstanceType=INSTANCE_TYPE, KeyName=key, MinCount=count, MaxCount=count
        )
        ids = [str(i["InstanceId"]) for i in reservation["Instances"]]
        self.launched.update(ids)
        return ids

    def wait_running(self, ids: list[str], timeout: float) -> dict[str, str]:
        """Poll DescribeInstances until every instance runs; returns id -> public IP."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.ec2.describe_instances(InstanceIds=ids)
            instances = [i for r in found["Reservations"] for i in r["Instances"]]
            for instance in instances:
                if instance["State"]["Name"] in ("terminated", "shutting-down"):
                    reason = instance.get("StateReason", {}).get("Message", "")
                    raise RuntimeError(f"{instance['InstanceId']} ended while launching: {reason}")
            if len(instances) == len(ids) and all(i["State"]["Name"] == "running" for i in instances):
                return {str(i["InstanceId"]): str(i["PublicIpAddress"]) for i in instances}
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ids} not running within {timeout:.0f} s")
            time.sleep(POLL_API)

    def timed_launch(self, ami: str, image: str, key: Path, timeout: float) -> LaunchResult:
        """RunInstances → running (DescribeInstances) → SSH login, with the node's steps timed."""
        timeline = Timeline()
        probes = {
            "nc_received": exists(self.instances, "i-*/launch.json"),
            "disk_ready": exists(self.instances, "i-*/root.qcow2"),
            **boot_probes(self.instances, "i-*/console.log", self._leases()),
        }
        with Watcher(timeline, probes):
            instance_id = self.run(ami, key.stem)[0]
            timeline.mark("api_returned")
            try:
                ip = self.wait_running([instance_id], timeout)[instance_id]
                timeline.mark("running")
                seconds = wait_for_login(ip, key, timeline, timeout)
                wait_event(timeline, "guest_ready", READY_GRACE)  # the step table wants it; not timed
            except Exception as error:
                console = self.instances / instance_id / "console.log"
                tail = console.read_text(errors="replace")[-800:] if console.exists() else "(no console)"
                with contextlib.suppress(Exception):
                    self.terminate([instance_id])
                raise RuntimeError(
                    f"launch of {instance_id}: {error} (steps {timeline.events})\n{tail}"
                ) from error
        rss = qemu_rss_mib(instance_id)
        self.terminate([instance_id])
        return LaunchResult("mallee", image, instance_id, seconds, dict(timeline.events), rss)

    def terminate(self, ids: list[str], timeout: float = 60.0) -> None:
        """TerminateInstances, then wait until the node has destroyed each domain and removed its files."""
        self.ec2.terminate_instances(InstanceIds=ids)
        deadline = time.monotonic() + timeout
        while any(qemu_pid(i) is not None or (self.instances / i).exists() for i in ids):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{ids} still on the node {timeout:.0f} s after TerminateInstances")
            time.sleep(0.1)
        self.launched.difference_update(ids)
