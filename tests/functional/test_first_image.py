"""On a new cloud, `mallee up` publishes the tiny guest as a public image and an EBS-backed copy of it
(`mallee image to-ebs`), and says how to launch them; another account launches the EBS one."""

from __future__ import annotations

import re
import time
from pathlib import Path

from functional.test_ec2_instances import wait_state
from support.cloud import start_cloud, stop_cloud


def test_new_cloud_publishes_a_public_tiny_image_once(tmp_path: Path) -> None:
    cloud = start_cloud(tmp_path, extra_env={"MALLEE_SEED_IMAGE": "true"})
    try:
        deadline = time.monotonic() + 240  # a cold build downloads Debian packages
        while "run-instances --image-id" not in cloud.log():
            assert time.monotonic() < deadline, cloud.log()[-3000:]
            assert "could not seed the tiny image" not in cloud.log(), cloud.log()[-3000:]
            time.sleep(1)
        ami = re.findall(r"run-instances --image-id (ami-[0-9a-f]+)", cloud.log())[-1]
        other = cloud.new_account("newcomer")
        images = cloud.client("ec2", other).describe_images(ImageIds=[ami])["Images"]
        assert images[0]["Public"] is True and images[0]["State"] == "available"
        assert (cloud.data_dir / "seeded-image").read_text().strip() == ami
        ebs = re.findall(
            r"EBS-backed \(stop, start, create-image\): --image-id (ami-[0-9a-f]+)", cloud.log()
        )[-1]
        assert (cloud.data_dir / "seeded-ebs-image").read_text().strip() == ebs
        ec2 = cloud.client("ec2", other)
        found = ec2.describe_images(ImageIds=[ebs])["Images"][0]
        assert (found["Public"], found["RootDeviceType"], found["State"]) == (True, "ebs", "available")
        assert found["KernelId"] == images[0]["KernelId"]
        run = ec2.run_instances(ImageId=ebs, MinCount=1, MaxCount=1)["Instances"][0]
        wait_state(ec2, [run["InstanceId"]], "running", 60)
        ec2.terminate_instances(InstanceIds=[run["InstanceId"]])
        wait_state(ec2, [run["InstanceId"]], "terminated", 60)
    finally:
        stop_cloud(cloud)
