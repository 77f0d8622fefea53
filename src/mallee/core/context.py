"""The request as it came off the wire, who sent it, and what the front door learned about it.

One `RequestContext` travels through the public API's chain of steps (route, authenticate, parse,
authorize, dispatch, serialize); each step fills in what it learns. Nothing here knows the web
framework: `services/*/app.py` builds an `HttpRequest` from it.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol
from urllib.parse import parse_qsl


class Headers:
    """Case-insensitive multi-valued HTTP headers that keep their order and original values."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self._items:
            if k == name:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def set(self, name: str, value: str) -> None:
        name = name.lower()
        self._items = [(k, v) for k, v in self._items if k != name]
        self._items.append((name, value))

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class BodyStream(Protocol):
    """A request body read as it arrives (S3 objects are never held whole in memory)."""

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes (all that is left for -1); b"" at the end."""
        ...


@dataclass
class HttpRequest:
    """An HTTP request exactly as received: SigV4 needs the raw path and query bytes.

    Query-protocol requests carry their (small) body in `body`; streamed requests leave `body`
    empty and carry `stream` instead.
    """

    method: str
    raw_path: str  # percent-encoded, as on the wire, without the query string
    query_string: str  # raw, without the leading '?'
    headers: Headers
    body: bytes = b""
    remote_addr: str = ""
    stream: BodyStream | None = None

    def query_params(self) -> list[tuple[str, str]]:
        return parse_qsl(self.query_string, keep_blank_values=True)

    def form_params(self) -> list[tuple[str, str]]:
        """Query-string parameters followed by an url-encoded body's (AWS merges both)."""
        params = self.query_params()
        ctype = (self.headers.get("content-type") or "").split(";")[0].strip().lower()
        if self.body and ctype == "application/x-www-form-urlencoded":
            params += parse_qsl(self.body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
        return params


@dataclass(frozen=True)
class FileBody:
    """A response body sent from a file (a stored object or a range of it). `file`: the file
    already open, when the handler opened it (whoever sends the response closes it)."""

    path: Path
    offset: int
    length: int
    file: BinaryIO | None = field(default=None, compare=False)

    def open(self) -> BinaryIO:
        return self.file if self.file is not None else open(self.path, "rb", buffering=0)  # noqa: SIM115


@dataclass
class HttpResponse:
    status: int
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    files: tuple[FileBody, ...] = ()  # sent one after another instead of `body` when set


@dataclass
class Principal:
    """Who signed the request: an account's root identity or one of its IAM users."""

    account_id: str
    account_name: str
    access_key_id: str
    user_id: str  # the IAM unique id (AIDA…), or the account id for the root identity
    user_name: str | None = None  # None: the account's root identity
    is_system_admin: bool = False  # the cloud administrator's account (Eucalyptus' "eucalyptus")
    session_token: str | None = None  # set for temporary (STS) credentials

    @property
    def is_root(self) -> bool:
        return self.user_name is None

    @property
    def arn(self) -> str:
        if self.user_name is None:
            return f"arn:aws:iam::{self.account_id}:root"
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"


@dataclass
class RequestContext:
    request: HttpRequest
    request_id: str
    region: str
    service: str | None = None  # botocore's endpoint prefix: ec2, iam, sts, s3
    operation: str | None = None  # botocore's operation name: DescribeRegions
    principal: Principal | None = None
    params: dict[str, Any] = field(default_factory=dict)
    # The account an operation acts on. Normally the principal's; the system administrator may
    # act on another account with Eucalyptus' `DelegateAccount` parameter.
    account_id: str | None = None
    # The owning service's unit of work (a database session) opened around the handler call.
    session: Any = None
    # The signing secret of the caller's key: S3 needs it to check aws-chunked chunk signatures.
    secret_key: str | None = None
