"""Calls into a Node Controller (one per host), made by its zone's Cluster Controller.

InstanceLaunch (a JSON object, as the CLC builds it):
  instance_id, reservation_id, account_id, instance_type {name, cpus, memory_mib, disk_gib},
  image {kind: "kernel"|"disk", kernel {url, sha256?, size}, ramdisk {...}|None, root {url, size, format}},
  private_ip, mac, hostname, key_name, public_key, user_data (base64), security_groups [names],
  availability_zone, launch_index
"""

from __future__ import annotations

from typing import Any

from mallee.rpc.transport import Client

RUN_INSTANCE = "run_instance"  # params: {"launch": InstanceLaunch} -> {"ok": true}; idempotent on the id
TERMINATE_INSTANCE = "terminate_instance"  # params: {"instance_id"} -> {"ok": true}; gone is fine
REBOOT_INSTANCE = "reboot_instance"  # params: {"instance_id"}
# -> {"instances": {id: {"state": str, "reason": str, "private_ip": str}}, "resources": {...},
#     "hypervisor": str}
DESCRIBE = "describe"
CONSOLE_OUTPUT = "console_output"  # params: {"instance_id"} -> {"output": base64 str}


def call(client: Client, method: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.call(method, **params)
    return result
