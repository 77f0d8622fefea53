"""The one clock the services read, so tests can move time without sleeping."""

from __future__ import annotations

import datetime as _dt

_offset = _dt.timedelta(0)


def now() -> _dt.datetime:
    """Timezone-aware UTC now (plus any offset a test set)."""
    return _dt.datetime.now(_dt.UTC) + _offset


def utc(when: _dt.datetime) -> _dt.datetime:
    """`when` in UTC; a naive datetime is taken to be UTC already."""
    return when.replace(tzinfo=_dt.UTC) if when.tzinfo is None else when.astimezone(_dt.UTC)


def set_offset(delta: _dt.timedelta) -> None:
    global _offset
    _offset = delta


def iso8601(when: _dt.datetime) -> str:
    """The form AWS XML answers use: `2026-11-24T07:59:16.000Z`."""
    when = when.astimezone(_dt.UTC)
    return when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"
