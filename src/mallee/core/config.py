"""Configuration in one typed place, read once. Nothing else in Mallee reads os.environ.

Sources, later ones winning: built-in defaults, `<data_dir>/mallee.toml`, then `MALLEE_*` environment
variables. The data directory is `$MALLEE_DATA_DIR`, else `~/.mallee`.
"""

from __future__ import annotations

import ipaddress
import json
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from mallee.core.errors import ConfigError

SERVICES = ("clc", "walrus", "cc", "sc", "nc")
# Offsets from port_base: the public endpoint is port_base itself (8773, as Eucalyptus).
PORT_OFFSETS = {"clc": 0, "cc": 1, "nc": 2, "sc": 3, "walrus": 4, "metadata": 5}
PLACEMENT_POLICIES = ("ROUNDROBIN", "GREEDY")  # the `scheduler` setting (services/cluster/scheduler.py)


@dataclass(frozen=True)
class Config:
    data_dir: Path
    host: str = "127.0.0.1"  # where services listen; loopback by default
    port_base: int = 8773
    region: str = "mallee-1"
    zone: str = "mallee-1a"  # the availability zone of this host's cluster controller
    clc_host: str = "127.0.0.1"  # where other services find the CLC
    # The cloud's records: empty, an SQLite file per service in the data directory; or a PostgreSQL
    # URL, the production choice (several CLC processes, many hosts; README "PostgreSQL"). On
    # PostgreSQL the CLC's tables are in the database's default schema, and Walrus's and the SC's
    # each in a schema named after the service (made by their migrations), unless given below.
    database_url: str = ""
    # Walrus's metadata (buckets, object versions) elsewhere: a PostgreSQL URL of its own (shared
    # by every Walrus worker of the cloud). Empty: as `database_url` says.
    walrus_database_url: str = ""
    # The storage controller's records (volumes, snapshots, exports) elsewhere, likewise.
    sc_database_url: str = ""
    aws_config_file: Path = field(default_factory=lambda: Path.home() / ".aws" / "config")
    aws_credentials_file: Path = field(default_factory=lambda: Path.home() / ".aws" / "credentials")
    # WARNING: a quiet log, what a person should read (core/logging.py); INFO (`--verbose`): the detail.
    log_level: str = "WARNING"
    # The door's limits, on the public endpoint (the CLC's and Walrus's connections; see
    # supervisor/door.py and docs/architecture.md, "The front door's limits"):
    # - a request head must arrive whole within `header_seconds` and fit in `max_header_bytes`
    #   (S3 allows 8 KiB of user metadata; 64 KiB in all is ample for every API);
    # - a request body may pause `body_idle_seconds` before it is answered RequestTimeout and its
    #   connection closed (a client that declares more than it sends never holds a worker);
    # - query-API (EC2, IAM, STS) bodies are at most `max_request_body` bytes, refused at once when
    #   declared larger; S3 streams bodies up to AWS's 5 GiB per PUT (EntityTooLarge past it);
    # - a connection may idle `keep_alive_seconds` between requests;
    # - one client address holds at most `connections_per_address` connections per process.
    header_seconds: float = 20.0
    max_header_bytes: int = 64 * 1024
    body_idle_seconds: float = 20.0
    max_request_body: int = 1024 * 1024
    keep_alive_seconds: int = 5
    connections_per_address: int = 512
    # How long a service may stay silent before `mallee status` calls it NOTREADY.
    heartbeat_seconds: float = 5.0
    # Virtual-hosted-style S3: when set (e.g. "s3.example.com"), Host `<bucket>.<s3_domain>` names
    # the bucket. Empty: path-style addressing only.
    s3_domain: str = ""
    # Compute: the cluster's nodes ("host:port,…"; empty: this host's node controller), placement
    # policy (Eucalyptus' names: ROUNDROBIN spreads instances over the nodes in turn, GREEDY packs
    # each node before it uses the next), and the node's drivers ("libvirt" or "fake"; "vpc" or
    # "fake", the VPC data plane).
    nodes: str = ""
    scheduler: str = "ROUNDROBIN"
    hypervisor: str = "libvirt"
    network: str = "vpc"
    image_cache_gib: int = 20
    # The Storage Controller's block-store driver ("file": sparse files exported over NBD by
    # qemu-storage-daemon; "fake": sizes only, for tests) and where the file driver keeps volumes
    # and its export servers' sockets: the hypervisor's user must reach those, so not under /root.
    blockstore: str = "file"
    sc_dir: str = "/var/lib/mallee/sc"
    # The node's VPC data plane (drivers/network/vpc_contract.py, docs/architecture.md "VPC
    # networking: the node's data plane"):
    # - `vpc_prefix` names this node's kernel objects (bridges "<prefix>v<vni>", router namespaces
    #   "mallee-<prefix>-<vni>", nftables tables): [a-z][a-z0-9]{0,3}, distinct per node
    #   controller on one machine;
    # - `underlay_address` is where other nodes send this node's VXLAN traffic (empty: `host`), on
    #   UDP `vxlan_port`;
    # - `public_bridge` carries `public_cidr`, the range instances' public addresses come from.
    #   When the bridge does not exist the node creates it at start and puts the host on it with
    #   the range's first host address (198.51.100.1), so that the all-in-one host reaches its
    #   instances' public addresses; the range is host-only then, never routed or NATed to the
    #   uplink. An operator's existing bridge is used as it is (see docs/architecture.md);
    # - `public_gateway`: where routers send public traffic off `public_cidr` (empty: nowhere).
    vpc_prefix: str = "m0"
    underlay_address: str = ""
    vxlan_port: int = 4789
    public_bridge: str = "mpub0"
    public_cidr: str = "198.51.100.0/24"
    public_gateway: str = ""
    # The cloud's public address pool (Eucalyptus' PUBLIC_IPS): ranges "first-last" and single
    # addresses, separated by commas or spaces, inside `public_cidr` (never its first host address,
    # the host's, nor `public_gateway`). Instances' public and elastic IPs come from it.
    public_ips: str = "198.51.100.16-198.51.100.254"
    # EBS quotas per account (AWS's defaults): how many volumes, and how many GiB in all of them.
    max_volumes_per_account: int = 5000
    max_volume_gib_per_account: int = 51200
    # Where the node keeps images, instance disks and consoles: the hypervisor's own user must be
    # able to reach it, so not under /root (Eucalyptus used /var/lib/eucalyptus/instances).
    node_dir: str = "/var/lib/mallee/nc"
    seed_image: bool = True  # on a new cloud, publish the tiny guest image (see supervisor/seed.py)
    # The node's own resources, overriding what the hypervisor measures (Eucalyptus' MAX_CORES /
    # MAX_MEM / MAX_DISK; 0: as measured).
    node_cores: int = 0
    node_memory_mib: int = 0
    node_disk_gib: int = 0
    # Overcommit, applied by the cluster controller to what each node reports: a node offers
    # instances cores × `cpu_overcommit` vCPUs (4.0: OpenStack's default) and memory ×
    # `memory_overcommit` MiB (1.0: memory is never promised twice unless an operator says so).
    # Disk is never overcommitted. Ratios are > 0; below 1 holds some of a node back.
    cpu_overcommit: float = 4.0
    memory_overcommit: float = 1.0
    # New instances' firmware (SMBIOS) says they are EC2 instances, so cloud-init takes them for AWS
    # and asks the metadata service with IMDSv2 tokens. Off by default: a guest that believes it runs
    # on AWS may act on it, e.g. call AWS-only endpoints (docs/architecture.md, "Compute as built").
    ec2_smbios: bool = False
    # Walrus processes on this host, sharing its port and database (0: one per CPU core, at most 4).
    walrus_workers: int = 0
    # New objects are encrypted at rest (SSE-S3) unless their bucket's encryption says otherwise,
    # as on S3 since 2023; false: only when a request or a bucket's configuration asks.
    walrus_default_encryption: bool = True
    # Tests only: a directory of armed crash points (see core/crashpoints.py); empty: none.
    crash_points_dir: str = ""

    @property
    def public_pool(self) -> list[str]:
        """Every address of `public_ips`, in order, but the host's and the gateway's."""
        reserved = {str(next(ipaddress.IPv4Network(self.public_cidr).hosts())), self.public_gateway}
        addresses: list[str] = []
        for item in self.public_ips.replace(",", " ").split():
            first, _, last = item.partition("-")
            low = int(ipaddress.IPv4Address(first))
            high = int(ipaddress.IPv4Address(last or first))
            addresses += [str(ipaddress.IPv4Address(n)) for n in range(low, high + 1)]
        return [a for a in addresses if a not in reserved]

    @property
    def walrus_worker_count(self) -> int:
        return self.walrus_workers if self.walrus_workers > 0 else min(os.cpu_count() or 1, 4)

    def port(self, service: str) -> int:
        return self.port_base + PORT_OFFSETS[service]

    def url(self, service: str, host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port(service)}"

    @property
    def underlay(self) -> str:
        """This node's VXLAN endpoint as other nodes name it ("address:port")."""
        return f"{self.underlay_address or self.host}:{self.vxlan_port}"

    @property
    def endpoint_url(self) -> str:
        """The public endpoint (EC2, S3, IAM, STS) as clients should address it."""
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port('clc')}"

    @property
    def clc_url(self) -> str:
        return f"http://{self.clc_host}:{self.port('clc')}"

    def database_url_for(self, service: str) -> str:
        own = {"walrus": self.walrus_database_url, "sc": self.sc_database_url}.get(service, "")
        if own:
            return own
        if self.database_url.startswith("postgresql"):
            # One database for the cloud: each service but the CLC in a schema of its own, so that
            # their tables (and Alembic's version table) never meet.
            if service == "clc":
                return self.database_url
            joiner = "&" if "?" in self.database_url else "?"
            return f"{self.database_url}{joiner}options=-csearch_path%3D{service}"
        if self.database_url and service == "clc":
            return self.database_url
        return f"sqlite:///{self.data_dir / (service + '.db')}"

    @property
    def deployment_key_file(self) -> Path:
        return self.data_dir / "deployment.key"

    @property
    def walrus_master_key_file(self) -> Path:
        """Walrus's master key (SSE-S3), kept with the deployment key, away from the data."""
        return self.data_dir / "walrus-master.key"


_ENV_KEYS = {f.name: "MALLEE_" + f.name.upper() for f in fields(Config) if f.name != "data_dir"}


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return raw if isinstance(raw, bool) else str(raw).lower() in ("1", "true", "yes")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
        if isinstance(default, Path):
            return Path(raw).expanduser()
        return str(raw)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name!r}: cannot use {raw!r} ({exc})") from exc


def data_dir_of(data_dir: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Path:
    """The data directory: `data_dir`, else $MALLEE_DATA_DIR, else ~/.mallee."""
    env = os.environ if environ is None else environ
    return Path(data_dir or env.get("MALLEE_DATA_DIR") or Path.home() / ".mallee").expanduser().resolve()


def remember(data_dir: Path, key: str, value: str) -> None:
    """Keep a setting given on the command line (`mallee up --database URL`) in `mallee.toml`, so
    that later runs use it too. The same value again changes nothing; another is refused, for a
    cloud's records cannot move by a flag (change the file, and move the data, on purpose)."""
    toml_path = data_dir / "mallee.toml"
    try:
        kept = tomllib.loads(toml_path.read_text()) if toml_path.exists() else {}
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{toml_path}: {exc}") from exc
    if key in kept:
        if kept[key] != value:
            raise ConfigError(f"{toml_path} already sets {key} = {kept[key]!r}; not changing it to {value!r}")
        return
    data_dir.mkdir(parents=True, exist_ok=True)
    text = toml_path.read_text() if toml_path.exists() else ""
    line = f"{key} = {json.dumps(value)}\n"  # a JSON string is a TOML basic string
    toml_path.write_text(text + ("\n" if text and not text.endswith("\n") else "") + line)


def load(data_dir: str | Path | None = None, environ: dict[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    base = data_dir_of(data_dir, env)
    cfg = Config(data_dir=base)
    if env.get("AWS_CONFIG_FILE"):
        cfg = replace(cfg, aws_config_file=Path(env["AWS_CONFIG_FILE"]))
    if env.get("AWS_SHARED_CREDENTIALS_FILE"):
        cfg = replace(cfg, aws_credentials_file=Path(env["AWS_SHARED_CREDENTIALS_FILE"]))
    updates: dict[str, Any] = {}
    toml_path = base / "mallee.toml"
    if toml_path.exists():
        try:
            file_values = tomllib.loads(toml_path.read_text())
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: {exc}") from exc
        for key, raw in file_values.items():
            if key not in _ENV_KEYS:
                raise ConfigError(f"{toml_path}: unknown setting {key!r}")
            updates[key] = raw
    for key, env_name in _ENV_KEYS.items():
        if env_name in env:
            updates[key] = env[env_name]
    for key, raw in updates.items():
        updates[key] = _coerce(key, raw, getattr(cfg, key))
    return _checked(replace(cfg, **updates))


def _checked(cfg: Config) -> Config:
    """Refuse a placement setting no scheduler could use, naming it and what it may be."""
    if cfg.scheduler not in PLACEMENT_POLICIES:
        raise ConfigError(
            f"setting 'scheduler': {cfg.scheduler!r} is not a placement policy "
            "(ROUNDROBIN spreads instances over the nodes, GREEDY packs them)"
        )
    for name in ("cpu_overcommit", "memory_overcommit"):
        ratio = getattr(cfg, name)
        if not (math.isfinite(ratio) and ratio > 0):
            raise ConfigError(f"setting {name!r}: {ratio!r} is not a ratio above 0 (1.0: no overcommit)")
    return cfg


def environ_for_children(cfg: Config) -> dict[str, str]:
    """The environment a supervised service process needs to load the same configuration."""
    env = dict(os.environ)
    env["MALLEE_DATA_DIR"] = str(cfg.data_dir)
    env["MALLEE_LOG_LEVEL"] = cfg.log_level  # as `mallee up --verbose` may have set it
    return env
