"""Marker / NextToken pagination shared by the list and describe operations."""

from __future__ import annotations

import base64
from collections.abc import Sequence
from typing import TypeVar

from mallee.core.errors import CloudError

T = TypeVar("T")


def _decode(token: str, code: str) -> int:
    try:
        start = int(base64.urlsafe_b64decode(token.encode() + b"==").decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise CloudError(code, f"Invalid pagination token {token!r}.") from exc
    if start < 0:
        raise CloudError(code, f"Invalid pagination token {token!r}.")
    return start


def _encode(index: int) -> str:
    return base64.urlsafe_b64encode(str(index).encode()).decode().rstrip("=")


def page(
    items: Sequence[T], token: str | None, limit: int | None, *, default: int, code: str = "ValidationError"
) -> tuple[list[T], str | None]:
    """One page of an ordered list, and the token for the next (None at the end)."""
    start = _decode(token, code) if token else 0
    size = default if limit is None else limit
    chunk = list(items[start : start + size])
    following = start + size
    return chunk, (_encode(following) if following < len(items) else None)


def marker_page(
    key: str, items: Sequence[T], p: dict[str, object], *, default: int = 100
) -> dict[str, object]:
    """IAM's list answer: `{key: [...], "IsTruncated": bool, "Marker": token?}` from Marker/MaxItems."""
    marker = p.get("Marker")
    limit = p.get("MaxItems")
    chunk, following = page(
        items,
        marker if isinstance(marker, str) else None,
        limit if isinstance(limit, int) else None,
        default=default,
    )
    out: dict[str, object] = {key: chunk, "IsTruncated": following is not None}
    if following:
        out["Marker"] = following
    return out
