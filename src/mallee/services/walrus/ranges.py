"""HTTP Range requests as S3 answers them: one range (first-last, first-, -suffix)."""

from __future__ import annotations

import re

from mallee.core.errors import CloudError

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(offset, length) to send, None to send the whole object (S3 ignores ranges it cannot parse
    and multi-range requests), or InvalidRange (416) when it cannot be satisfied."""
    m = _RANGE.match(header.strip())
    if not m or (not m.group(1) and not m.group(2)):
        return None
    first, last = m.group(1), m.group(2)
    if not first:  # suffix: the last N bytes
        n = int(last)
        if n == 0:
            raise _unsatisfiable(size)
        n = min(n, size)
        return (size - n, n) if size else None
    start = int(first)
    end = int(last) if last else size - 1
    if start >= size:
        raise _unsatisfiable(size)
    if end < start:
        return None
    end = min(end, size - 1)
    return start, end - start + 1


def _unsatisfiable(size: int) -> CloudError:
    return CloudError("InvalidRange", f"The requested range is not satisfiable (object size {size})", 416)
