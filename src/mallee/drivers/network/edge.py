"""The EDGE network driver: a Linux bridge, dnsmasq and nftables on this node (see base.py).

Desired state lives in `state_dir/state.json` so a restarted node controller re-renders the same
rules; the kernel objects are named after the bridge (`mallee_<bridge>` tables), so two drivers on
two bridges never touch each other's state.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from mallee.core.files import write_atomically
from mallee.drivers.network import bridge, dnsmasq, nftables
from mallee.drivers.network.base import (
    GroupRule,
    HostNetwork,
    InstanceInterface,
    Lease,
    NetworkDriver,
    NetworkError,
)
from mallee.drivers.network.state import NodeState


class EdgeNetworkDriver(NetworkDriver):
    capabilities = {
        "dhcp": True,
        "security_groups": True,
        "anti_spoofing": True,
        "metadata_redirect": True,
        "elastic_ips": False,
        "real": True,
    }

    def __init__(self, state_dir: Path, *, dnsmasq_binary: str = dnsmasq.DNSMASQ) -> None:
        self._dir = state_dir
        self._dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self._dir, 0o755)  # dnsmasq re-reads the hosts file after dropping root
        self._state_file = state_dir / "state.json"
        self._state = NodeState.load(self._state_file)
        self._files = dnsmasq.DnsmasqFiles.under(state_dir)
        self._binary = dnsmasq_binary
        self._lock = threading.RLock()
        self.timings: dict[str, float] = {}  # seconds of the last setup / nft apply / ...

    # -- the contract ---------------------------------------------------------------------------

    def setup(self, host: HostNetwork) -> None:
        with self._lock:
            old = self._state.host
            if old is not None and old.bridge != host.bridge:
                raise NetworkError(f"set up for bridge {old.bridge}; tear it down before using {host.bridge}")
            started = time.monotonic()
            self._state.host = host
            self._apply_nft(filter_table=True, antispoof_table=True)  # the guard before the bridge exists
            bridge.ensure(host)
            dnsmasq.write_hosts(self._state.sorted_instances(), self._files)
            pid = dnsmasq.running_pid(self._files)
            wanted = dnsmasq.command(host, self._files, self._binary)
            if pid is not None and dnsmasq.running_command(pid) != wanted:
                dnsmasq.stop(self._files)
                pid = None
            if pid is None:
                dnsmasq.start(host, self._files, self._binary)
            self._state.save(self._state_file)
            self.timings["setup"] = time.monotonic() - started

    def teardown(self) -> None:
        with self._lock:
            host = self._state.host
            if host is not None:
                nftables.apply(nftables.delete_script(host.bridge))
            dnsmasq.stop(self._files)
            if host is not None:
                bridge.delete(host.bridge)
            for path in (self._files.hosts, self._files.leases, self._state_file):
                path.unlink(missing_ok=True)
            self._state = NodeState()

    def add_instance(self, iface: InstanceInterface) -> None:
        with self._lock:
            self._require_setup()
            before = dict(self._state.instances)
            if not self._state.put_instance(iface):
                return
            self._commit_instances(before)

    def remove_instance(self, instance_id: str) -> None:
        with self._lock:
            before = dict(self._state.instances)
            gone = self._state.instances.get(instance_id)
            if gone is None or not self._state.drop_instance(instance_id):
                return
            self._commit_instances(before)
            self._forget_lease(gone)

    def apply_security_groups(self, rules: list[GroupRule], members: dict[str, list[str]]) -> None:
        with self._lock:
            self._require_setup()
            before = (self._state.rules, self._state.members)
            if not self._state.set_groups(rules, members):
                return
            try:
                self._apply_nft(filter_table=True)
            except Exception:
                self._state.rules, self._state.members = before
                raise
            self._state.save(self._state_file)

    def instances(self) -> list[InstanceInterface]:
        with self._lock:
            return self._state.sorted_instances()

    def leases(self) -> list[Lease]:
        return dnsmasq.read_leases(self._files)

    def describe(self) -> dict[str, object]:
        with self._lock:
            host = self._state.host
            ports = bridge.ports(host.bridge) if host else []
            known = {i.device for i in self._state.instances.values()}
            return {
                "driver": "edge",
                "bridge": host.bridge if host else None,
                "address": f"{host.address}/{host.prefix}" if host else None,
                "bridge_exists": bool(host) and bridge.exists(host.bridge if host else ""),
                "ports": ports,
                "unregistered_ports": [p for p in ports if p not in known],
                "dnsmasq_pid": dnsmasq.running_pid(self._files),
                "instances": [i.instance_id for i in self._state.sorted_instances()],
                "groups": self._state.group_ids(),
                "rules": len(self._state.rules),
                "timings": dict(self.timings),
            }

    # -- helpers --------------------------------------------------------------------------------

    def _require_setup(self) -> None:
        if self._state.host is None:
            raise NetworkError("the network is not set up on this node")

    def _commit_instances(self, before: dict[str, InstanceInterface]) -> None:
        try:
            self._apply_nft(antispoof_table=True)
            dnsmasq.write_hosts(self._state.sorted_instances(), self._files)
        except Exception:
            self._state.instances = before
            raise
        self._state.save(self._state_file)

    def _apply_nft(self, *, filter_table: bool = False, antispoof_table: bool = False) -> None:
        host = self._state.host
        assert host is not None
        tables = []
        if filter_table:
            st = self._state
            tables.append(nftables.render_filter_table(host, st.rules, st.members, st.group_ids()))
        if antispoof_table:
            known = {i.device for i in self._state.instances.values()}
            strangers = [p for p in bridge.ports(host.bridge) if p not in known]
            tables.append(nftables.render_antispoof_table(host, self._state.sorted_instances(), strangers))
        self.timings["nft_apply"] = nftables.apply(nftables.replace_script(tables))

    def _forget_lease(self, gone: InstanceInterface) -> None:
        """dnsmasq keeps a removed instance's lease until it expires and would refuse its IP to the
        next instance's MAC: drop the lease (dnsmasq is stopped while its lease file is edited)."""
        leases = self._files.leases
        try:
            lines = leases.read_text().splitlines(keepends=True)
        except FileNotFoundError:
            return
        kept = [ln for ln in lines if not _lease_of(ln, gone)]
        if len(kept) == len(lines) or self._state.host is None:
            return
        dnsmasq.stop(self._files)
        write_atomically(leases, "".join(kept))
        dnsmasq.start(self._state.host, self._files, self._binary)


def _lease_of(line: str, iface: InstanceInterface) -> bool:
    fields = line.split()
    return len(fields) >= 3 and (fields[1].lower() == iface.mac or fields[2] == iface.ip)
