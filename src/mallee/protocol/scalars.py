"""Scalar values between their wire text and Python, for every protocol and both directions.

Reading: text → int, bool, float, datetime (aware, UTC), bytes (base64 or raw) or str, with a
ValueError naming what was expected so each protocol can word its own error.
Writing: Python → the text AWS sends (`true`, ISO 8601 with milliseconds, RFC 822 headers…).
"""

from __future__ import annotations

import base64
import binascii
import math
import re
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.model import Shape

_INT_RE = re.compile(r"[+-]?[0-9]{1,20}")
_FLOAT_RE = re.compile(r"[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]{1,4})?|[+-]?(?:Infinity|NaN)")
_INT_RANGES = {"integer": (-(2**31), 2**31 - 1), "long": (-(2**63), 2**63 - 1)}
_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def convert_scalar(shape: Shape, raw: str, timestamp_format: str | None = None) -> Any:
    """Convert one textual value to the shape's Python type; ValueError names what was expected."""
    kind = shape.type_name
    if kind in ("integer", "long"):
        if not _INT_RE.fullmatch(raw):
            raise ValueError("an integer")
        low, high = _INT_RANGES[kind]
        number = int(raw)
        if not low <= number <= high:
            raise ValueError(f"an integer between {low} and {high}")
        return number
    if kind == "boolean":
        lowered = raw.lower()
        if lowered not in ("true", "false"):
            raise ValueError("true or false")
        return lowered == "true"
    if kind in ("float", "double"):
        if not _FLOAT_RE.fullmatch(raw):
            raise ValueError("a number")
        return float(raw)
    if kind == "timestamp":
        return parse_timestamp(raw, timestamp_format or shape.serialization.get("timestampFormat"))
    if kind == "blob":
        try:
            return base64.b64decode(raw.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError):
            raise ValueError("base64-encoded data") from None
    return raw  # string (and anything exotic): as sent


def parse_timestamp(raw: str, timestamp_format: str | None = None) -> datetime:
    """ISO 8601, RFC 822 or epoch seconds (whichever the format says or parses) → aware UTC."""
    raw = raw.strip()
    try:
        if timestamp_format == "rfc822" or (timestamp_format is None and "," in raw):
            parsed = parsedate_to_datetime(raw)
        elif _FLOAT_RE.fullmatch(raw) and len(raw) < 24:
            seconds = float(raw)
            if not math.isfinite(seconds):
                raise ValueError(raw)
            return datetime.fromtimestamp(seconds, UTC)
        else:
            parsed = datetime.fromisoformat(raw)
    except (ValueError, TypeError, OverflowError, OSError, IndexError):
        raise ValueError("an ISO 8601 timestamp") from None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)  # AWS reads zone-less times as UTC
    return parsed.astimezone(UTC)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, UTC)
    return parse_timestamp(str(value))


def format_timestamp(value: Any, timestamp_format: str | None = "iso8601") -> str:
    """A datetime (naive = UTC), epoch number or timestamp string, as AWS writes it."""
    moment = _as_datetime(value)
    if timestamp_format == "rfc822":
        # email.utils.format_datetime(moment, usegmt=True), without its detour through timetuple()
        return (
            f"{_DAYS[moment.weekday()]}, {moment.day:02d} {_MONTHS[moment.month - 1]} {moment.year:04d} "
            f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} GMT"
        )
    if timestamp_format == "unixTimestamp":
        seconds = moment.timestamp()
        return str(int(seconds)) if seconds.is_integer() else f"{seconds:.3f}"
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def format_scalar(shape: Shape, value: Any, default_timestamp_format: str = "iso8601") -> str:
    """The text of one scalar member (XML element text or header value)."""
    kind = shape.type_name
    if kind == "boolean":
        return "true" if value else "false"
    if kind == "timestamp":
        return format_timestamp(value, shape.serialization.get("timestampFormat", default_timestamp_format))
    if kind == "blob":
        data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
        return base64.b64encode(data).decode("ascii")
    if kind in ("float", "double"):
        number = float(value)
        if math.isnan(number):
            return "NaN"
        if math.isinf(number):
            return "Infinity" if number > 0 else "-Infinity"
        return repr(number)
    if kind in ("integer", "long"):
        return str(int(value))
    return str(value)
