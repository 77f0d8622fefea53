"""A first image for newcomers, as devstack gives CirrOS: on a new cloud, `mallee up` builds (or
takes from the build cache) the tiny Debian guest, publishes it as a public image with the `mallee`
command like any user would, makes an EBS-backed copy of it (`mallee image to-ebs`: it can be
stopped, started and imaged), and prints ready-to-paste run-instances lines."""

from __future__ import annotations

import logging
import re
import subprocess
import sys
import time

from mallee.core.config import Config, environ_for_children

log = logging.getLogger("mallee.up")
PUBLISH_ATTEMPTS = 6  # ~20 s in all


def _mallee(cfg: Config, *args: str) -> str | None:
    """Run a `mallee` command like a user would; its output, or None if it failed (logged)."""
    command = [sys.executable, "-m", "mallee.cli.main", "--data-dir", str(cfg.data_dir), *args]
    for attempt in range(PUBLISH_ATTEMPTS):
        result = subprocess.run(
            command, env=environ_for_children(cfg), capture_output=True, text=True, timeout=900
        )
        # Walrus's workers may still be starting when the CLC is up: ServiceUnavailable, retried.
        if result.returncode == 0 or "ServiceUnavailable" not in result.stderr:
            break
        time.sleep(1 + attempt)
    if result.returncode != 0:
        log.warning("could not seed the tiny image (%s): %s", " ".join(args[:3]), result.stderr.strip())
        return None
    return result.stdout


def _once(cfg: Config, marker_name: str, *steps: tuple[str, ...]) -> str | None:
    """The ami the last step printed, made the first time only (kept in a marker file)."""
    marker = cfg.data_dir / marker_name
    if marker.exists():
        return marker.read_text().strip() or None
    output: str | None = ""
    for step in steps:
        output = _mallee(cfg, *step)
        if output is None:
            return None
    found: list[str] = re.findall(r"\bami-[0-9a-f]{8,17}\b", output or "")
    if not found:
        log.warning("seeding the tiny image printed no ami id: %s", (output or "").strip())
        return None
    marker.write_text(found[-1] + "\n")
    return found[-1]


def seed_image(cfg: Config) -> str | None:
    """The public tiny image's id, publishing it the first time; None if that failed (logged)."""
    out = str(cfg.data_dir / "images" / "tiny")
    return _once(
        cfg,
        "seeded-image",
        ("image", "build", "tiny", "--out", out),
        ("image", "publish", out, "--name", "tiny", "--public"),
    )


def seed_ebs_image(cfg: Config, ami: str) -> str | None:
    """The public EBS-backed copy of the tiny image, made the first time; None if that failed."""
    return _once(cfg, "seeded-ebs-image", ("image", "to-ebs", ami, "--name", "tiny-ebs", "--public"))


def launch_hint(ami: str, ebs_ami: str | None = None) -> str:
    aws = "aws --profile mallee ec2"
    lines = [
        "  your first instance:",
        f"    {aws} create-key-pair --key-name mykey --query KeyMaterial --output text > mykey.pem",
        f"    {aws} run-instances --image-id {ami} --instance-type m1.small --key-name mykey",
    ]
    if ebs_ami:
        lines.append(f"  EBS-backed (stop, start, create-image): --image-id {ebs_ami}")
    return "\n".join([*lines, ""])
