"""Which threads hold an open database transaction, so that no rpc or HTTP call to another component
is ever made inside one (record, then ask: a call that waits on a peer must not hold locks or a
snapshot, and a crash between the call and the commit must not leave the peer acting on state the
database never kept). `db` reports transactions as they begin and end; callers of peers ask
`refuse_inside` first, and a violation is a programming error that tests catch."""

from __future__ import annotations

import threading
from collections import Counter

_lock = threading.Lock()
_open: Counter[int] = Counter()  # thread id -> transactions it began and has not ended


class CallInsideTransaction(RuntimeError):
    """A call to another component was about to be made while this thread held a transaction."""


def began() -> int:
    """Note a transaction begun by this thread; returns the thread id to pass to `ended`."""
    me = threading.get_ident()
    with _lock:
        _open[me] += 1
    return me


def ended(thread_id: int) -> None:
    with _lock:
        _open[thread_id] -= 1
        if _open[thread_id] <= 0:
            del _open[thread_id]


def held_here() -> bool:
    return _open.get(threading.get_ident(), 0) > 0


def refuse_inside(what: str) -> None:
    if held_here():
        raise CallInsideTransaction(
            f"{what} was called inside an open database transaction; commit first (record, then ask)"
        )
