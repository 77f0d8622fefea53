"""bench/network.py's rule propagation through the whole cloud: `mallee up` on libvirt and the VPC
network (bench/_launch_cloud.py), one tiny VM in a security group of its own, and this host — on the
cloud's public bridge, as in the all-in-one — knocking at the VM's public address. Timed from the
moment AuthorizeSecurityGroupIngress returns to the first SYN the node admits (the API records the
rule and wakes the reconciler, which pushes the new network to the node; the node applies it), and
from RevokeSecurityGroupIngress returning to the first SYN refused.

The prober starts a connection every 10 ms without waiting for the earlier ones and reports when the
first attempt that got through (or, for a revoke, the first that did not) was started; attempts
unanswered for 0.5 s are dropped before the kernel resends their SYN (1 s), so a resent SYN never
passes for an earlier one.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from pathlib import Path

from _harness import ProcessSet
from _launch_cloud import INSTANCE_TYPE, Cloud
from _launch_host import free_subnets, libvirt_daemons

from mallee.images.tiny import build_tiny

BOOT_TIMEOUT = 120.0
SSH = {"IpProtocol": "tcp", "FromPort": 22, "ToPort": 22, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}

PROBER = r"""
import selectors, socket, sys, time
ip, port, want = sys.argv[1], int(sys.argv[2]), sys.argv[3]  # want: "open" or "closed"
sel = selectors.DefaultSelector()
print("ready", flush=True)
def found(started):
    print(started, flush=True)
    sys.exit(0)
while True:
    s = socket.socket()
    s.setblocking(False)
    s.connect_ex((ip, port))
    sel.register(s, selectors.EVENT_WRITE, time.monotonic())
    end = time.monotonic() + 0.01
    while (left := end - time.monotonic()) > 0:
        for key, _ in sel.select(left):
            sel.unregister(key.fileobj)
            ok = key.fileobj.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
            key.fileobj.close()
            if ok == (want == "open"):
                found(key.data)
    for key in list(sel.get_map().values()):
        if time.monotonic() - key.data > 0.5:
            sel.unregister(key.fileobj)
            key.fileobj.close()
            if want == "closed":
                found(key.data)
"""


def _knock(ip: str, want: str) -> subprocess.Popen[str]:
    prober = subprocess.Popen(
        [sys.executable, "-c", PROBER, ip, "22", want], stdout=subprocess.PIPE, text=True
    )
    assert prober.stdout is not None and prober.stdout.readline().strip() == "ready"
    time.sleep(0.3)  # a few attempts in the old state first
    return prober


def _seen(prober: subprocess.Popen[str], timeout: float = 10.0) -> float:
    assert prober.stdout is not None
    try:
        line, _ = prober.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        prober.kill()
        prober.wait()
        raise RuntimeError(f"the change did not reach the node within {timeout:.0f} s") from None
    return float(line.strip().splitlines()[-1])


def _wait_ready(cloud: Cloud, instance_id: str) -> str:
    """The instance's public address, once its guest said MALLEE-READY (dropbear is up by then)."""
    ip = cloud.wait_running([instance_id], BOOT_TIMEOUT)[instance_id]
    deadline = time.monotonic() + BOOT_TIMEOUT
    while "MALLEE-READY" not in cloud.ec2.get_console_output(InstanceId=instance_id).get("Output", ""):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{instance_id}'s guest did not boot within {BOOT_TIMEOUT:.0f} s")
        time.sleep(1)
    return ip


def api_propagation(rounds: int, workdir: Path) -> dict[str, list[float]]:
    """Seconds from each API call's return to the first SYN it let in (authorize) or kept out
    (revoke), `rounds` of each."""
    workdir.chmod(0o711)  # the qemu user must reach the node's files below it
    tiny = build_tiny(out_dir=workdir / "tiny")
    procs = ProcessSet()
    delays: dict[str, list[float]] = {"authorize": [], "revoke": []}
    with libvirt_daemons():
        cloud = Cloud(procs, workdir, free_subnets(1)[0])
        try:
            cloud.start()
            ami = cloud.publish(tiny.directory, "tiny")
            cloud.create_key("bench")
            ec2 = cloud.ec2
            group = ec2.create_security_group(GroupName="bench-probe", Description="probe")["GroupId"]
            launched = ec2.run_instances(
                ImageId=ami, InstanceType=INSTANCE_TYPE, KeyName="bench", MinCount=1, MaxCount=1,
                SecurityGroupIds=[group],
            )  # fmt: skip
            instance_id = launched["Instances"][0]["InstanceId"]
            cloud.launched.add(instance_id)
            ip = _wait_ready(cloud, instance_id)
            for _ in range(rounds):
                prober = _knock(ip, "open")
                ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH])
                returned = time.monotonic()
                delays["authorize"].append(_seen(prober) - returned)
                prober = _knock(ip, "closed")
                ec2.revoke_security_group_ingress(GroupId=group, IpPermissions=[SSH])
                returned = time.monotonic()
                delays["revoke"].append(_seen(prober) - returned)
        finally:
            with contextlib.suppress(Exception):
                cloud.stop()
    return delays
