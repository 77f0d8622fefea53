"""Calls into a Cluster Controller (one per availability zone), made by the CLC.

Every call is idempotent and names the instances by ids the CLC chose, so a retried call never
makes two VMs. The CLC states what it wants (`run_instances`, `terminate_instances`); the CC
reports what is (`describe`); the CLC's reconciler moves one toward the other.
"""

from __future__ import annotations

from typing import Any

from mallee.rpc.transport import Client

# params: {"instances": [InstanceLaunch...], "min_count": int}
#   -> {"placed": {instance_id: {"node": str, "private_ip": str, "mac": str}}}
#   or error InsufficientInstanceCapacity (nothing placed) when fewer than min_count fit.
RUN_INSTANCES = "run_instances"
# params: {"instance_ids": [...]} -> {"terminating": [...]}; unknown ids are ignored (already gone).
TERMINATE_INSTANCES = "terminate_instances"
REBOOT_INSTANCES = "reboot_instances"  # params: {"instance_ids": [...]}
# -> {"instances": {id: {"state": str, "node": str, "private_ip": str, "reason": str}},
#     "nodes": [{"host", "port", "state", "total": {...}, "free": {...}, "hypervisor": str}]}
DESCRIBE = "describe"
CONSOLE_OUTPUT = "console_output"  # params: {"instance_id"} -> {"output": base64 str}
REGISTER_NODE = "register_node"  # params: {"host", "port"} -> {"ok": true}


def call(client: Client, method: str, **params: Any) -> dict[str, Any]:
    result: dict[str, Any] = client.call(method, **params)
    return result
