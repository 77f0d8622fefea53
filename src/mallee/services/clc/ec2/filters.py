"""EC2's `Filter.N.Name` / `Filter.N.Value.M` semantics: values of one filter OR together, filters
AND together, `*` and `?` wildcards, and InvalidParameterValue for a filter the resource lacks."""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any, TypeVar

from mallee.core.errors import CloudError

T = TypeVar("T")
Getter = Callable[[T], Any]


@lru_cache(maxsize=512)
def _pattern(value: str) -> re.Pattern[str]:
    # EC2 wildcards: `*` any run, `?` one character; `\` escapes them. fnmatch's [] classes do not apply.
    escaped = "".join("[" + c + "]" if c in "[]" else c for c in value)
    return re.compile(fnmatch.translate(escaped), re.DOTALL)


def _matches(actual: Any, wanted: list[str]) -> bool:
    values = actual if isinstance(actual, list | tuple | set) else [actual]
    texts = [str(v).lower() if isinstance(v, bool) else str(v) for v in values if v is not None]
    return any(_pattern(w).match(t) for w in wanted for t in texts)


def apply(
    items: Iterable[T], filters: list[dict[str, Any]] | None, getters: Mapping[str, Getter[T]]
) -> list[T]:
    result = list(items)
    for f in filters or []:
        name = f.get("Name")
        if not name:
            raise CloudError("InvalidParameterValue", "A filter must have a Name.")
        getter = getters.get(name)
        if getter is None:
            raise CloudError("InvalidParameterValue", f"The filter '{name}' is invalid")
        wanted = [str(v) for v in f.get("Values", [])]
        result = [item for item in result if _matches(getter(item), wanted)]
    return result
