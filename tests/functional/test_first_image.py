"""On a new cloud, `mallee up` publishes the tiny guest as a public image and says how to launch it."""

from __future__ import annotations

import re
import time
from pathlib import Path

from support.cloud import start_cloud, stop_cloud


def test_new_cloud_publishes_a_public_tiny_image_once(tmp_path: Path) -> None:
    cloud = start_cloud(tmp_path, extra_env={"MALLEE_SEED_IMAGE": "true"})
    try:
        deadline = time.monotonic() + 240  # a cold build downloads Debian packages
        while "run-instances --image-id" not in cloud.log():
            assert time.monotonic() < deadline, cloud.log()[-3000:]
            assert "could not publish the tiny image" not in cloud.log(), cloud.log()[-3000:]
            time.sleep(1)
        ami = re.findall(r"run-instances --image-id (ami-[0-9a-f]+)", cloud.log())[-1]
        other = cloud.new_account("newcomer")
        images = cloud.client("ec2", other).describe_images(ImageIds=[ami])["Images"]
        assert images[0]["Public"] is True and images[0]["State"] == "available"
        assert (cloud.data_dir / "seeded-image").read_text().strip() == ami
    finally:
        stop_cloud(cloud)
