"""A real cloud-init guest on Mallee (issue 16): Debian 12 with the distribution's stock cloud-init
(`mallee image build debian`, cached like the tiny image) boots in a VPC, configures itself from the
metadata service and lets the image's default user in with the instance's key pair.

The cloud presents EC2-style SMBIOS (`MALLEE_EC2_SMBIOS`), so cloud-init recognises the platform as
AWS and takes the path it takes on EC2: IMDSv2 tokens only, the network from the metadata's
`network/interfaces/macs/…`. One boot (about a minute and a half under TCG) checks that
`#cloud-config` user-data's `write_files` and `runcmd` ran, and that cloud-init finished without a
warning or an error. (The cloud's teardown terminates the instance.)
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mallee.images.debian_cloud import DEFAULT_USER
from support.cloud import wait_for
from support.vpc_cloud import SSH_ANYWHERE, VpcCloud, key_pair, real_vpc_cloud

BOOT_WAIT = 420  # systemd and cloud-init's four stages under TCG on two busy cores
SEPARATOR = "=====mallee====="
# Run as the default user once cloud-init is done (its status waits for that); sections in order.
REPORT = f"""cloud-init status --wait --format json 2>/dev/null; echo {SEPARATOR}
cat /etc/mallee-written; echo {SEPARATOR}; cat /var/tmp/mallee-runcmd; echo {SEPARATOR}
cloud-id; echo {SEPARATOR}; sudo cat /sys/class/dmi/id/product_uuid; echo {SEPARATOR}
hostname; echo {SEPARATOR}; sudo cat /var/log/cloud-init.log"""
USER_DATA = """\
#cloud-config
write_files:
  - path: /etc/mallee-written
    content: |
      written by cloud-init from Mallee's user-data
runcmd:
  - [sh, -c, "echo ran as $(id -un) > /var/tmp/mallee-runcmd"]
"""


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[VpcCloud]:
    with real_vpc_cloud(
        tmp_path_factory.mktemp("cloudinit"), "i", extra_env={"MALLEE_EC2_SMBIOS": "true"}
    ) as world:
        yield world


def _publish_debian(net: VpcCloud, workdir: Path) -> str:
    started = time.monotonic()
    built = net.cloud.run("mallee", "image", "build", "debian", "--out", str(workdir / "debian"), timeout=900)
    assert built.returncode == 0, built.stderr
    print(f"image build (cached after the first): {time.monotonic() - started:.1f} s")
    published = net.cloud.run(
        "mallee", "image", "publish", str(workdir / "debian"), "--name", "debian", "--public", timeout=300
    )
    assert published.returncode == 0, published.stderr
    return next(word for word in published.stdout.split() if word.startswith("ami-"))


def test_a_stock_cloud_init_guest_configures_itself_and_lets_its_user_in(
    net: VpcCloud, tmp_path: Path
) -> None:
    ec2 = net.cloud.client("ec2")
    ami = _publish_debian(net, tmp_path)
    key = key_pair(ec2, tmp_path / "k.pem")
    group = ec2.create_security_group(GroupName="ssh", Description="ssh")["GroupId"]
    ec2.authorize_security_group_ingress(GroupId=group, IpPermissions=[SSH_ANYWHERE])
    started = time.monotonic()
    instance_id = ec2.run_instances(
        ImageId=ami,
        InstanceType="c1.medium",
        KeyName="k",
        MinCount=1,
        MaxCount=1,
        SecurityGroupIds=[group],
        UserData=USER_DATA,
    )["Instances"][0]["InstanceId"]

    def described() -> Any:
        return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]

    running = wait_for("running", lambda: (i := described())["State"]["Name"] == "running" and i, 120)
    ip = running["PublicIpAddress"]

    # One login does it all: each SSH handshake costs the TCG guest seconds.
    def logged_in() -> str | None:
        done = net.ssh(key, ip, REPORT, user=DEFAULT_USER, timeout=BOOT_WAIT)
        return done.stdout if done.returncode == 0 else None

    try:
        report = wait_for("cloud-init done, and the default user let in", logged_in, BOOT_WAIT, every=3)
    except Exception:
        print(ec2.get_console_output(InstanceId=instance_id).get("Output", "")[-6000:])
        raise
    print(f"RunInstances -> cloud-init done, logged in as {DEFAULT_USER}: {time.monotonic() - started:.1f} s")
    status, written, ran, cloud_id, product_uuid, hostname, log = report.split(SEPARATOR + "\n")

    assert json.loads(status)["errors"] == [] and json.loads(status)["status"] == "done"
    assert written == "written by cloud-init from Mallee's user-data\n"
    assert ran == "ran as root\n"
    assert cloud_id.strip() == "aws"  # the EC2-style SMBIOS was recognised
    assert product_uuid.strip().lower().startswith("ec2")
    assert hostname.strip() == "ip-" + running["PrivateIpAddress"].replace(".", "-")
    assert "Fetching Ec2 IMDSv2 API Token" in log  # the path cloud-init takes on EC2
    # cloud-init logs as "<time> - <module>.py[<LEVEL>]: <message>".
    complaints = [line for line in log.splitlines() if re.search(r"\.py\[(WARNING|ERROR|CRITICAL)\]", line)]
    assert not complaints, "\n".join(complaints)
