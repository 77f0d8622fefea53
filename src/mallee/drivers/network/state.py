"""The desired state of one node's network, shared by the drivers: the instance registry with its
conflict rules, the security groups, and a JSON form the real driver keeps on disk across restarts."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mallee.core.files import write_atomically
from mallee.drivers.network.base import ConflictError, GroupRule, HostNetwork, InstanceInterface


@dataclass
class NodeState:
    host: HostNetwork | None = None
    instances: dict[str, InstanceInterface] = field(default_factory=dict)
    rules: list[GroupRule] = field(default_factory=list)
    members: dict[str, list[str]] = field(default_factory=dict)

    def sorted_instances(self) -> list[InstanceInterface]:
        return [self.instances[k] for k in sorted(self.instances)]

    def put_instance(self, iface: InstanceInterface) -> bool:
        """Register iface; returns whether anything changed. Raises ConflictError on a clash."""
        if self.instances.get(iface.instance_id) == iface:
            return False
        for other in self.instances.values():
            if other.instance_id == iface.instance_id:
                continue
            for what in ("mac", "ip", "device"):
                if getattr(other, what) == getattr(iface, what):
                    raise ConflictError(f"{what} {getattr(iface, what)} belongs to {other.instance_id}")
        self.instances[iface.instance_id] = iface
        return True

    def drop_instance(self, instance_id: str) -> bool:
        return self.instances.pop(instance_id, None) is not None

    def set_groups(self, rules: list[GroupRule], members: dict[str, list[str]]) -> bool:
        normalized = {g: sorted(set(ips)) for g, ips in sorted(members.items())}
        ordered = sorted(set(rules), key=_rule_key)
        if ordered == self.rules and normalized == self.members:
            return False
        self.rules, self.members = ordered, normalized
        return True

    def group_ids(self) -> list[str]:
        ids = set(self.members)
        for rule in self.rules:
            ids.add(rule.group_id)
            if rule.source_group is not None:
                ids.add(rule.source_group)
        return sorted(ids)

    def to_json(self) -> str:
        return json.dumps(
            {
                "host": asdict(self.host) if self.host else None,
                "instances": [asdict(i) for i in self.sorted_instances()],
                "rules": [asdict(r) for r in self.rules],
                "members": self.members,
            },
            indent=1,
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str) -> NodeState:
        raw = json.loads(text)
        host = HostNetwork(**raw["host"]) if raw.get("host") else None
        instances = {i["instance_id"]: InstanceInterface(**i) for i in raw.get("instances", [])}
        rules = [GroupRule(**r) for r in raw.get("rules", [])]
        return cls(host, instances, rules, {g: list(ips) for g, ips in raw.get("members", {}).items()})

    def save(self, path: Path) -> None:
        write_atomically(path, self.to_json())

    @classmethod
    def load(cls, path: Path) -> NodeState:
        try:
            return cls.from_json(path.read_text())
        except FileNotFoundError:
            return cls()


def _rule_key(rule: GroupRule) -> tuple[str, str, int, int, str, str]:
    return (
        rule.group_id,
        rule.protocol,
        rule.from_port,
        rule.to_port,
        rule.cidr or "",
        rule.source_group or "",
    )
