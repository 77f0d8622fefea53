"""`mallee up` as a supervisor: a crashed service comes back, SIGTERM stops every process."""

from __future__ import annotations

import os
import re
import signal
import time
from pathlib import Path

from support.cloud import start_cloud, stop_cloud


def _child_pids(log: str) -> dict[str, int]:
    pids: dict[str, int] = {}
    for service, pid in re.findall(r"started (\w+(?: worker \d+)?) \(pid (\d+)\)", log):
        pids[service] = int(pid)  # the latest start wins
    return pids


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie still answers kill(0); only count it when it is not defunct.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_crashed_service_restarts_and_sigterm_stops_everything(tmp_path: Path) -> None:
    cloud = start_cloud(tmp_path)
    try:
        first = _child_pids(cloud.log())
        assert set(first) == {"clc", "walrus worker 0", "walrus worker 1", "cc", "sc", "nc"}
        os.kill(first["cc"], signal.SIGKILL)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            pids = _child_pids(cloud.log())
            if pids["cc"] != first["cc"]:
                break
            time.sleep(0.2)
        assert pids["cc"] != first["cc"], cloud.log()
        assert re.search(r"cc exited with code -9; restarting in [\d.]+s \(restart #1\)", cloud.log())
        # The restarted cc heartbeats again and its zone is available.
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            zone = cloud.client("ec2").describe_availability_zones()["AvailabilityZones"][0]
            if zone["State"] == "available":
                break
            time.sleep(0.3)
        assert zone["State"] == "available"
        children = _child_pids(cloud.log())
    finally:
        code = stop_cloud(cloud)
    assert code == 0
    assert "all services stopped" in cloud.log()
    assert not [s for s, pid in children.items() if _alive(pid)]
