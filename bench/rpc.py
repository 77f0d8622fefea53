"""Internal rpc benchmark: what the typed contracts cost per call, against the untyped JSON they
replaced, measured in the same run.

For the messages of the launch path — a RunInstances of 3 launches (CLC -> CC), one RunInstance
(CC -> NC), a node's report of 20 instances (NC -> CC, every poll) and a cluster's report (CC -> CLC,
every reconciliation) — it times what a call does with its message on both sides: the sender encodes
it, the receiver decodes it into its type (msgspec, strict). The baseline is the same data as plain
dicts through `json.dumps`/`json.loads`, as the transport did before. The HTTP exchange around it is
the same for both and is not part of the figure.

    .venv/bin/python bench/rpc.py [--seconds 1.0]
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from typing import Any

import msgspec

from mallee.rpc import cluster, node
from mallee.rpc.contract import Operation, encode


def _launch(n: int) -> node.InstanceLaunch:
    return node.InstanceLaunch(
        instance_id=f"i-{n:017x}",
        reservation_id="r-0123456789abcdef0",
        account_id="123456789012",
        instance_type=node.InstanceType(name="m1.small", cpus=1, memory_mib=256, disk_gib=5),
        image=node.LaunchImage(
            root=node.ImageSource(key="ami-0123456789abcdef0", url="http://127.0.0.1:8773/b/k?" + "x" * 400),
            kernel=node.ImageSource(
                key="aki-0123456789abcdef0", url="http://127.0.0.1:8773/b/k?" + "x" * 400
            ),
        ),
        private_ip=f"10.111.0.{n + 2}",
        mac=f"d0:0d:00:00:00:{n:02x}",
        hostname=f"i-{n:017x}",
        availability_zone="mallee-1a",
        key_name="k",
        public_key="ssh-ed25519 " + "A" * 68 + " k",
        user_data="IyEvYmluL3NoCmVjaG8gaGVsbG8K",
    )


def _messages() -> list[tuple[str, Operation[Any, Any], msgspec.Struct, bool]]:
    needs = node.Resources(cores=1, memory_mib=256, disk_gib=5)
    report = node.NodeReport(
        instances={f"i-{n:017x}": node.NodeInstance(state="running", needs=needs) for n in range(20)},
        resources=node.Resources(cores=16, memory_mib=16384, disk_gib=200),
        hypervisor="qemu",
    )
    summary = cluster.NodeSummary(
        name="127.0.0.1:8775", state="ENABLED", hypervisor="qemu", total=needs, free=needs
    )
    clustered = cluster.ClusterReport(
        ready=True,
        instances={
            f"i-{n:017x}": cluster.ClusterInstance(state="running", node="127.0.0.1:8775") for n in range(20)
        },
        nodes=[summary],
    )
    return [
        ("run_instances (3 launches)", cluster.RUN_INSTANCES, cluster.RunInstances(
            instances=[_launch(n) for n in range(3)], min_count=1), True),
        ("run_instance (1 launch)", node.RUN_INSTANCE, node.RunInstance(launch=_launch(0)), True),
        ("node report (20 instances)", node.DESCRIBE, report, False),
        ("cluster report (20 instances)", cluster.DESCRIBE, clustered, False),
    ]  # fmt: skip


def _per_call(work: Callable[[], object], seconds: float) -> float:
    """Microseconds per call of `work`, best of three timed stretches."""
    best = float("inf")
    for _ in range(3):
        count, started = 0, time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds / 3:
            for _ in range(100):
                work()
            count += 100
        best = min(best, elapsed / count * 1e6)
    return best


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=1.0, help="per figure (1.0)")
    args = parser.parse_args()
    print(f"{'message':<32}{'bytes':>7}{'typed µs':>10}{'untyped µs':>12}{'typed/untyped':>15}")
    for name, operation, message, is_request in _messages():
        body = encode(message)
        plain = msgspec.to_builtins(message)
        decode = operation.decode_request if is_request else operation.decode_response

        def typed(
            body: bytes = body, decode: Callable[[bytes], Any] = decode, message: Any = message
        ) -> object:
            return decode(encode(message))

        def untyped(plain: Any = plain) -> object:
            return json.loads(json.dumps(plain).encode())

        t, u = _per_call(typed, args.seconds), _per_call(untyped, args.seconds)
        print(f"{name:<32}{len(body):>7}{t:>10.1f}{u:>12.1f}{t / u:>15.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
