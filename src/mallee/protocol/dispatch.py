"""The dispatch table: one registry per API, operation name -> handler.

A handler is a plain function named as botocore names the operation (`describe_regions`); it takes
the request context and the parsed input members and returns a dict shaped like the output.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import Any

from botocore import xform_name

from mallee.core.context import RequestContext
from mallee.protocol.specs import load_service

Handler = Callable[[RequestContext, dict[str, Any]], dict[str, Any] | None]


@dataclass(frozen=True)
class Operation:
    name: str
    handler: Handler
    # Who may call it beyond what IAM policies say:
    #   "policy"  - evaluated against the caller's IAM policies (the default, as on AWS)
    #   "any"     - any authenticated caller (sts:GetCallerIdentity needs no permission on AWS)
    #   "system"  - the cloud administrator's account only (Eucalyptus' admin extensions)
    access: str = "policy"


@cache
def _names(service: str) -> dict[str, str]:
    return {xform_name(op): op for op in load_service(service).operation_names}


class Registry:
    def __init__(self, service: str) -> None:
        self.service = service
        self.operations: dict[str, Operation] = {}

    def operation(self, access: str = "policy") -> Callable[[Handler], Handler]:
        """Register the decorated function under the operation its name spells."""
        if access not in ("policy", "any", "system"):
            raise ValueError(f"unknown access rule {access!r}")

        def register(func: Handler) -> Handler:
            op_name = _names(self.service).get(func.__name__)
            if op_name is None:
                raise LookupError(f"{self.service} has no operation named like {func.__name__}()")
            if op_name in self.operations:
                raise LookupError(f"{self.service}:{op_name} registered twice")
            self.operations[op_name] = Operation(op_name, func, access)
            return func

        return register

    def get(self, op_name: str) -> Operation | None:
        return self.operations.get(op_name)

    def merge(self, other: Registry) -> None:
        for name, op in other.operations.items():
            if name in self.operations:
                raise LookupError(f"{self.service}:{name} registered twice")
            self.operations[name] = op
