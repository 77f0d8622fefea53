"""`mallee status`: the cloud at a glance. The services the CLC knows (their heartbeat state, and
whether their `/metrics` page answers now), then what those pages say: instances per state, each
node's capacity used and free, and the API requests, errors and rpc errors counted so far."""

from __future__ import annotations

import argparse
import json
import urllib.request
import xml.etree.ElementTree as ET
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

from mallee.cli.client import AdminClient
from mallee.cli.table import table

SCRAPE_SECONDS = 3.0
STATES = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
MIB = 1024**2
GIB = 1024**3


@dataclass(frozen=True)
class Sample:
    service: str  # the type of the service whose page it came from
    name: str
    labels: dict[str, str]
    value: float


def status(args: argparse.Namespace) -> int:
    described = AdminClient.from_profile(args.profile).call("ec2", "DescribeServices")
    services = list(described.iterfind("./serviceStatusSet/item"))
    with ThreadPoolExecutor(max_workers=8) as pool:
        pages = list(pool.map(_scrape, services))
    samples = [sample for page in pages if page is not None for sample in page]
    print(_services(services, pages))
    print()
    print(_instances(samples))
    print()
    print(_nodes(samples))
    print()
    print(_requests(samples))
    print()
    print(_rpc_errors(samples))
    return 0


def _scrape(item: ET.Element) -> list[Sample] | None:
    """The samples of the service's metrics page, or None when it does not answer."""
    host = item.findtext("host", "")
    host = "127.0.0.1" if host in ("0.0.0.0", "::", "") else host
    url = f"http://{host}:{item.findtext('port', '')}/metrics"
    try:
        with urllib.request.urlopen(url, timeout=SCRAPE_SECONDS) as response:
            text = response.read().decode()
    except (OSError, ValueError):
        return None
    service = item.findtext("serviceType", "")
    return [
        Sample(service, s.name, dict(s.labels), s.value)
        for family in text_string_to_metric_families(text)
        for s in family.samples
    ]


def _services(services: list[ET.Element], pages: list[list[Sample] | None]) -> str:
    rows = [
        [
            item.findtext("serviceType", ""),
            item.findtext("serviceName", ""),
            item.findtext("partition", "") or "-",
            f"{item.findtext('host', '')}:{item.findtext('port', '')}",
            item.findtext("state", ""),
            item.findtext("version", ""),
            "up" if page is not None else "down",
            _detail(item.findtext("detail", "")),
        ]
        for item, page in zip(services, pages, strict=True)
    ]
    return table(rows, ["TYPE", "NAME", "ZONE", "HOST", "STATE", "VERSION", "METRICS", "DETAIL"])


def _detail(raw: str) -> str:
    """A service's own report, in short: the node's accelerator and why, the cluster's nodes."""
    try:
        detail = json.loads(raw or "{}")
    except ValueError:
        return ""
    if "hypervisor" in detail:
        reason = f" ({detail['reason']})" if detail.get("reason") else ""
        return f"hypervisor {detail['hypervisor']}{reason}"
    if "nodes" in detail:
        up = sum(1 for n in detail["nodes"] if n.get("state") == "ENABLED")
        return f"{up}/{len(detail['nodes'])} nodes enabled"
    return ""


def _instances(samples: list[Sample]) -> str:
    counts = {state: 0 for state in STATES}
    for s in samples:
        if s.name == "mallee_instances":
            counts[s.labels["state"]] = counts.get(s.labels["state"], 0) + int(s.value)
    return table([["", *(str(n) for n in counts.values())]], ["INSTANCES", *(s.upper() for s in counts)])


def _nodes(samples: list[Sample]) -> str:
    """Each node's cores, memory (MiB) and disk (GiB) as used/free; "-" where a node that does
    not answer leaves them unknown."""
    units = {"mallee_node_vcpus": 1, "mallee_node_memory_bytes": MIB, "mallee_node_disk_bytes": GIB}
    nodes: dict[tuple[str, str], dict[str, float]] = defaultdict(dict)
    for s in samples:
        key = (s.labels.get("node", ""), s.labels.get("zone", ""))
        if s.name == "mallee_node_up":
            nodes[key]["up"] = s.value
        elif s.name in units:
            nodes[key][f"{s.name}:{s.labels['kind']}"] = s.value / units[s.name]
    rows = []
    for (node, zone), values in sorted(nodes.items()):
        row = [node, zone, "up" if values.get("up") else "down"]
        for name in units:
            used, free = values.get(f"{name}:used"), values.get(f"{name}:free")
            row.append(f"{used:g}/{free:g}" if used is not None and free is not None else "-")
        rows.append(row)
    header = ["NODE", "ZONE", "STATE", "VCPUS_USED/FREE", "MEMORY_MIB_USED/FREE", "DISK_GIB_USED/FREE"]
    return table(rows, header)


def _requests(samples: list[Sample]) -> str:
    """Requests by API, with those answered 4xx (the caller's error) and 5xx (the cloud's)."""
    counts: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    for s in samples:
        if s.name == "mallee_api_requests_total":
            row = counts[s.labels["service"]]
            row[0] += int(s.value)
            status = s.labels.get("status", "")
            if status.startswith("4"):
                row[1] += int(s.value)
            elif status.startswith("5"):
                row[2] += int(s.value)
    rows = [[api, *(str(n) for n in row)] for api, row in sorted(counts.items())]
    return table(rows, ["API", "REQUESTS", "ERRORS_4XX", "ERRORS_5XX"])


def _rpc_errors(samples: list[Sample]) -> str:
    """Failed rpc calls, by the service that made them, the operation and how they failed."""
    counts: dict[tuple[str, str, str], int] = defaultdict(int)
    for s in samples:
        if s.name == "mallee_rpc_client_errors_total":
            counts[(s.service, s.labels["operation"], s.labels["kind"])] += int(s.value)
    if not counts:
        return "RPC_ERRORS  none"
    rows = [[*key, str(n)] for key, n in sorted(counts.items())]
    return table(rows, ["RPC_FROM", "OPERATION", "KIND", "ERRORS"])
