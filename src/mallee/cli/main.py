"""The `mallee` command. Running the cloud (`up`, `serve`) execs into the supervisor; everything
else is a client of the public API over HTTP, with the administrator's aws profile."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from pathlib import Path

from mallee.cli import commands, images, status
from mallee.cli.client import ApiError

SERVICES = ("clc", "walrus", "cc", "sc", "nc")


def _exec_supervisor(args: argparse.Namespace, rest: list[str]) -> int:
    argv = [sys.executable, "-m", "mallee.supervisor"]
    if args.data_dir:
        argv += ["--data-dir", args.data_dir]
    os.execv(sys.executable, argv + rest)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mallee", description="Mallee: an AWS-compatible private cloud.")
    parser.add_argument("--data-dir", help="data directory (default: $MALLEE_DATA_DIR or ~/.mallee)")
    parser.add_argument(
        "--profile", default="mallee", help="aws profile of the administrator (default: mallee)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="initialise (first run) and run the whole cloud on this machine")
    up.add_argument("--verbose", action="store_true", help="log the services' detail (log_level INFO)")
    up.add_argument("--database", metavar="URL", help=DATABASE_HELP)
    stop = sub.add_parser("down", help="end the all-in-one cloud and remove what it set up on this host")
    stop.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    serve = sub.add_parser("serve", help="run one service in the foreground (multi-host set-ups)")
    serve.add_argument("service", choices=(*SERVICES, "nc-sim"))
    serve.add_argument("--verbose", action="store_true", help="log the service's detail (log_level INFO)")
    serve.add_argument(
        "options",
        nargs=argparse.REMAINDER,
        help="nc-sim's: simulated nodes for scale work (see `mallee serve nc-sim --help`)",
    )

    sub.add_parser(
        "status", help="services, instances per state, node capacity and requests, from their metrics"
    )

    account = sub.add_parser("account", help="cloud accounts").add_subparsers(
        dest="account_command", required=True
    )
    account.add_parser("create", help="create an account").add_argument("name")
    account.add_parser("list", help="list accounts")
    delete = account.add_parser("delete", help="delete an account")
    delete.add_argument("name")
    delete.add_argument("--recursive", action="store_true", help="also delete its users, groups and keys")

    cluster = sub.add_parser("cluster", help="availability zones and their cluster controllers")
    cluster_commands = cluster.add_subparsers(dest="cluster_command", required=True)
    register_cluster = cluster_commands.add_parser(
        "register", help="add an availability zone served by a running cluster controller"
    )
    register_cluster.add_argument("host")
    register_cluster.add_argument("--port", type=int, default=8774)
    register_cluster.add_argument("--zone", required=True, help="the zone it serves (its zone setting)")

    storage = sub.add_parser("storage", help="the zones' storage controllers (EBS volumes and snapshots)")
    storage_commands = storage.add_subparsers(dest="storage_command", required=True)
    register_storage = storage_commands.add_parser(
        "register", help="give a registered zone its running storage controller"
    )
    register_storage.add_argument("host")
    register_storage.add_argument("--port", type=int, default=8776)
    register_storage.add_argument("--zone", required=True, help="the zone it serves (its zone setting)")

    node = sub.add_parser("node", help="node controllers").add_subparsers(dest="node_command", required=True)
    register = node.add_parser("register", help="add a node controller to a zone's cluster")
    register.add_argument("host")
    register.add_argument("--port", type=int, default=8775)
    register.add_argument("--zone", help="availability zone (default: the first)")
    node.add_parser("list", help="each node: zone, state, instances, free/total room").add_argument(
        "--zone", help="only this availability zone"
    )
    maintenance = node.add_parser("maintenance", help="stop placing new instances on a node (or --off)")
    maintenance.add_argument("node", metavar="HOST[:PORT]")
    maintenance.add_argument("--off", action="store_true", help="take the node out of maintenance")
    evacuate = node.add_parser(
        "evacuate", help="restart a node's EBS-backed instances on other nodes (it must be in maintenance)"
    )
    evacuate.add_argument("node", metavar="HOST[:PORT]")
    deregister = node.add_parser("deregister", help="remove a node that runs no instances from its zone")
    deregister.add_argument("node", metavar="HOST[:PORT]")

    sub.add_parser("usage", help="object storage used by each account, and its quota")
    quota = sub.add_parser("quota", help="object storage quotas").add_subparsers(
        dest="quota_command", required=True
    )
    set_quota = quota.add_parser("set", help="limit an account's objects and bytes (0: no limit)")
    set_quota.add_argument("account")
    set_quota.add_argument("--objects", type=int, default=0)
    set_quota.add_argument("--bytes", type=int, default=0)

    creds = sub.add_parser("credentials", help="make an access key and write an aws profile and a eucarc")
    creds.add_argument("account")
    creds.add_argument("user", nargs="?")
    creds.add_argument("--profile-name", help="profile to write (default: ACCOUNT or ACCOUNT-USER)")
    creds.add_argument(
        "--eucarc", type=Path, help="where to write the eucarc (default: DATA_DIR/credentials/)"
    )

    password = sub.add_parser(
        "console-password",
        help="set an IAM user's console password (makes its login profile, or replaces the password)",
    )
    password.add_argument("account", help="the user's account (name or id)")
    password.add_argument("--user", required=True, help="the IAM user's name")
    password.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input, not a prompt"
    )
    password.add_argument(
        "--reset-required",
        action="store_true",
        help="the user must choose another password at its next sign-in",
    )

    itype = sub.add_parser("instance-type", help="instance types").add_subparsers(
        dest="type_command", required=True
    )
    itype.add_parser("list", help="list instance types")
    set_type = itype.add_parser("set", help="change a type's vCPUs, memory or disk")
    set_type.add_argument("name")
    set_type.add_argument("--cpus", type=int)
    set_type.add_argument("--memory", type=int, help="MiB")
    set_type.add_argument("--disk", type=int, help="GiB")
    set_type.add_argument("--reset", action="store_true", help="back to the default size")
    images.add_parsers(sub)
    return parser


DATABASE_HELP = (
    "the cloud's PostgreSQL database, e.g. postgresql://mallee@/mallee (kept in mallee.toml as "
    "database_url; default: SQLite files in the data directory)"
)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "up":
        database = ["--database", args.database] if args.database else []
        return _exec_supervisor(args, ["up", *(["--verbose"] if args.verbose else []), *database])
    if args.command == "down":
        return _exec_supervisor(args, ["down", *(["--yes"] if args.yes else [])])
    if args.command == "serve":
        verbose = ["--verbose"] if args.verbose else []
        return _exec_supervisor(args, ["serve", args.service, *verbose, *args.options])
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "status": status.status,
        "account": commands.account,
        "credentials": commands.credentials,
        "console-password": commands.console_password,
        "instance-type": commands.instance_type,
        "usage": commands.usage,
        "node": commands.node,
        "cluster": commands.cluster,
        "storage": commands.storage,
        "quota": commands.quota,
        "image": images.image,
        "cloud-cert": images.cloud_cert,
    }
    try:
        return handlers[args.command](args)
    except ApiError as exc:
        print(f"mallee: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
