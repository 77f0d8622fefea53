"""A first image for newcomers, as devstack gives CirrOS: on a new cloud, `mallee up` builds (or
takes from the build cache) the tiny Debian guest, publishes it as a public image with the `mallee`
command like any user would, and prints a ready-to-paste run-instances line."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

from mallee.core.config import Config, environ_for_children

log = logging.getLogger("mallee.up")
PUBLISH_ATTEMPTS = 6  # ~20 s in all


def seed_image(cfg: Config) -> str | None:
    """The public tiny image's id, publishing it the first time; None if that failed (logged)."""
    marker = cfg.data_dir / "seeded-image"
    if marker.exists():
        return marker.read_text().strip() or None
    out = cfg.data_dir / "images" / "tiny"
    base = [sys.executable, "-m", "mallee.cli.main", "--data-dir", str(cfg.data_dir)]
    env = environ_for_children(cfg)
    steps = (
        base + ["image", "build", "tiny", "--out", str(out)],
        base + ["image", "publish", str(out), "--name", "tiny", "--public"],
    )
    output = ""
    for command in steps:
        for attempt in range(PUBLISH_ATTEMPTS):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
            # Walrus's workers may still be starting when the CLC is up: ServiceUnavailable, retried.
            if result.returncode == 0 or "ServiceUnavailable" not in result.stderr:
                break
            time.sleep(1 + attempt)
        if result.returncode != 0:
            log.warning(
                "could not publish the tiny image (%s): %s", " ".join(command[3:6]), result.stderr.strip()
            )
            return None
        output = result.stdout
    found: list[str] = re.findall(r"\bami-[0-9a-f]{8,17}\b", output)
    if not found:
        log.warning("publishing the tiny image printed no ami id: %s", output.strip())
        return None
    ami = found[-1]
    marker.write_text(ami + "\n")
    return ami


def launch_hint(ami: str) -> str:
    aws = "aws --profile mallee ec2"
    return "\n".join(
        [
            "  your first instance:",
            f"    {aws} create-key-pair --key-name mykey --query KeyMaterial --output text > mykey.pem",
            f"    {aws} run-instances --image-id {ami} --instance-type m1.small --key-name mykey",
            "",
        ]
    )
