"""Walrus's contract, called by the CLC."""

from __future__ import annotations

from mallee.rpc.contract import Api, Empty, Message, Operation

API = Api("objectstorage", version=1)


class AccountUsage(Message):
    buckets: int
    objects: int
    bytes: int


class Usage(Message):
    accounts: dict[str, AccountUsage]


USAGE = Operation(API, "usage", Empty, Usage)
