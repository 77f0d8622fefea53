"""Process entry point: `python -m mallee.supervisor up | down | serve SERVICE` (the `mallee`
command execs into this for the commands that run or remove services). `serve nc-sim` runs
simulated nodes for scale work (supervisor/simulated_nodes.py)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace

from mallee.core import config as config_mod
from mallee.core import logging as mlog
from mallee.core.config import SERVICES
from mallee.core.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mallee")
    parser.add_argument("--data-dir", help="data directory (default: $MALLEE_DATA_DIR or ~/.mallee)")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("up", help="initialise and run the whole cloud on this machine")
    run.add_argument("--verbose", action="store_true", help="log the services' detail (log_level INFO)")
    run.add_argument("--database", metavar="URL", help="the cloud PostgreSQL URL (kept in mallee.toml)")
    stop = sub.add_parser("down", help="end the all-in-one cloud and remove what it set up on this host")
    stop.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=(*SERVICES, "nc-sim"))
    serve.add_argument("--worker", type=int, default=0, help="which Walrus worker (0 .. walrus_workers-1)")
    from mallee.supervisor import simulated_nodes

    simulated_nodes.add_arguments(serve)
    serve.add_argument("--verbose", action="store_true", help="log the service's detail (log_level INFO)")
    args = parser.parse_args(argv)
    try:
        if getattr(args, "database", None):
            config_mod.remember(config_mod.data_dir_of(args.data_dir), "database_url", args.database)
        cfg = config_mod.load(args.data_dir)
    except ConfigError as exc:
        print(f"mallee: {exc}", file=sys.stderr)
        return 2
    if getattr(args, "verbose", False):
        cfg = replace(cfg, log_level=mlog.verbose(cfg.log_level))
    if args.command == "up":
        from mallee.supervisor.up import up

        return up(cfg)
    if args.command == "down":
        from mallee.supervisor.down import down

        return down(cfg, args.yes)
    if args.service == "nc-sim":
        try:
            fleet = simulated_nodes.fleet_of(args)
        except ValueError as exc:
            print(f"mallee: {exc}", file=sys.stderr)
            return 2
        from mallee.supervisor.simulated_serve import serve as serve_fleet

        return serve_fleet(cfg, fleet)
    from mallee.supervisor.serve import serve as serve_one

    serve_one(args.service, cfg, args.worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
