"""Process entry point: `python -m mallee.supervisor up | down | serve SERVICE` (the `mallee`
command execs into this for the commands that run or remove services)."""

from __future__ import annotations

import argparse
import sys

from mallee.core import config as config_mod
from mallee.core.config import SERVICES
from mallee.core.errors import ConfigError


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mallee")
    parser.add_argument("--data-dir", help="data directory (default: $MALLEE_DATA_DIR or ~/.mallee)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("up", help="initialise and run the whole cloud on this machine")
    stop = sub.add_parser("down", help="end the all-in-one cloud and remove what it set up on this host")
    stop.add_argument("--yes", action="store_true", help="do not ask for confirmation")
    serve = sub.add_parser("serve", help="run one service in the foreground")
    serve.add_argument("service", choices=SERVICES)
    serve.add_argument("--worker", type=int, default=0, help="which Walrus worker (0 .. walrus_workers-1)")
    args = parser.parse_args(argv)
    try:
        cfg = config_mod.load(args.data_dir)
    except ConfigError as exc:
        print(f"mallee: {exc}", file=sys.stderr)
        return 2
    if args.command == "up":
        from mallee.supervisor.up import up

        return up(cfg)
    if args.command == "down":
        from mallee.supervisor.down import down

        return down(cfg, args.yes)
    from mallee.supervisor.serve import serve as serve_one

    serve_one(args.service, cfg, args.worker)
    return 0


if __name__ == "__main__":
    sys.exit(main())
