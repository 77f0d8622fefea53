"""One log format and one policy for every process: quiet unless asked.

By default (`log_level` WARNING) a cloud's log holds what a person should read: the supervisor's
own lines (one per service it starts, what it stops or leaves running) and warnings and errors.
Libraries' and modules' details (Alembic's start-up, uvicorn's, what a node re-adopted) show at
`log_level` INFO, which `--verbose` sets.
"""

from __future__ import annotations

import logging
import sys


def verbose(level: str) -> str:
    """The level `--verbose` asks for: INFO, or `level` where that says more already (DEBUG)."""
    return level if logging.getLevelName(level.upper()) in (logging.DEBUG, logging.NOTSET) else "INFO"


def setup(service: str, level: str) -> logging.Logger:
    """Log to stderr at `level`; the process's own logger (`mallee.<service>`, returned) speaks at
    INFO whatever the level, for the few lines it writes are meant for a person."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(f"%(asctime)s {service} %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    own = logging.getLogger(f"mallee.{service}")
    own.setLevel(min(logging.INFO, root.level))
    return own
