"""The request as it came off the wire, who sent it, and what the front door learned about it.

One `RequestContext` travels through the public API's chain of steps (route, authenticate, parse,
authorize, dispatch, serialize); each step fills in what it learns. Nothing here knows the web
framework: `services/*/app.py` builds an `HttpRequest` from it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol, TypeVar, cast
from urllib.parse import parse_qsl

T = TypeVar("T")


class Headers:
    """Case-insensitive multi-valued HTTP headers that keep their order and original values."""

    __slots__ = ("_items", "_first", "changes")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self.changes = 0  # `set` calls: readings of the headers kept elsewhere are stale once it moves
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]
        # Each name's first value, for `get` (a request asks for ~20 headers): built from the end
        # so that the first occurrence is the one left standing.
        self._first: dict[str, str] = dict(reversed(self._items))

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._first.get(name.lower(), default)

    def first_values(self) -> Mapping[str, str]:
        """Each lower-cased name's first value (what `get` answers), for callers that look up many
        names. Read only."""
        return self._first

    def has_repeats(self) -> bool:
        """Whether some name comes more than once (cheap: most requests have none)."""
        return len(self._first) != len(self._items)

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [v for k, v in self._items if k == name]

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and name.lower() in self._first

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def set(self, name: str, value: str) -> None:
        name = name.lower()
        self._items = [(k, v) for k, v in self._items if k != name]
        self._items.append((name, value))
        self._first[name] = value
        self.changes += 1

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
    # Authentication, routing and parsing all read the parameters: each is parsed once, and again
    # only if what it was parsed from is replaced. (query_string, its parameters) and
    # (body, Content-Type, the body's parameters).
    _query_cache: tuple[str, list[tuple[str, str]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    _form_cache: tuple[bytes, str | None, str, list[tuple[str, str]]] | None = field(
        default=None, init=False, repr=False, compare=False
    )
    # (query_string, form body, headers, headers.changes, what `signature`'s reader found)
    _signature_cache: tuple[str, bytes, Headers, int, object] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    # (what `route` was asked for, method, raw_path, query_string, form body, headers,
    # headers.changes, what its reader found)
    _route_cache: tuple[object, str, str, str, bytes, Headers, int, Any] | None = field(
        default=None, init=False, repr=False, compare=False
    )

    def route(self, key: object, read: Callable[[HttpRequest], T]) -> T:
        """`read(self)` (routing.classify's reading of where the request goes; `key`: the options it
        was asked with), read once while the request line, headers and a form's body stay as they
        are: the front door, the app and the gateway all ask."""
        cached = self._route_cache
        form = self._form_body()
        if (
            cached is None
            or cached[0] != key
            or cached[1] is not self.method
            or cached[2] is not self.raw_path
            or cached[3] is not self.query_string
            or cached[4] is not form
            or cached[5] is not self.headers
            or cached[6] != self.headers.changes
        ):
            found = read(self)
            headers = self.headers
            cached = (
                key,
                self.method,
                self.raw_path,
                self.query_string,
                form,
                headers,
                headers.changes,
                found,
            )
            self._route_cache = cached
        return cast(T, cached[7])

    def _form_body(self) -> bytes:
        """The body when it is a URL-encoded form (it may carry a signature and the API's
        action); b"" otherwise: an object's body changes neither."""
        if not self.body:
            return b""
        return self.body if "form-urlencoded" in (self.headers.get("content-type") or "") else b""

    def signature(self, read: Callable[[HttpRequest], object]) -> object:
        """`read(self)` (auth.extract's reading of how the request is signed), read once while the
        query string, form body and headers stay as they are: routing, the choice of where to
        answer and authentication all ask."""
        cached = self._signature_cache
        form = self._form_body()
        headers = self.headers
        if (
            cached is None
            or cached[0] is not self.query_string
            or cached[1] is not form
            or cached[2] is not headers
            or cached[3] != headers.changes
        ):
            found = read(self)
            cached = self._signature_cache = (self.query_string, form, headers, headers.changes, found)
        return cached[4]

    def query_params(self) -> list[tuple[str, str]]:
        """The query string's parameters, in order (a new list: callers may extend it)."""
        cached = self._query_cache
        if cached is None or cached[0] is not self.query_string:
            cached = self._query_cache = (
                self.query_string,
                parse_qsl(self.query_string, keep_blank_values=True) if self.query_string else [],
            )
        return list(cached[1])

    def form_params(self, errors: str = "strict") -> list[tuple[str, str]]:
        """Query-string parameters followed by an url-encoded body's (AWS merges both). A body
        that is not UTF-8, raw or percent-encoded (`%FF`), raises UnicodeDecodeError, or with
        errors="replace" reads as U+FFFD."""
        params = self.query_params()
        content_type = self.headers.get("content-type")
        cached = self._form_cache
        if (
            cached is None
            or cached[0] is not self.body
            or cached[1] is not content_type
            or cached[2] != errors
        ):
            body_params: list[tuple[str, str]] = []
            ctype = (content_type or "").split(";")[0].strip().lower()
            if self.body and ctype == "application/x-www-form-urlencoded":
                text = self.body.decode("utf-8", errors)
                body_params = parse_qsl(text, keep_blank_values=True, strict_parsing=False, errors=errors)
            cached = self._form_cache = (self.body, content_type, errors, body_params)
        return params + cached[3]


# The ASGI scope extension by which the public door offers to write a body from a thread, straight
# to the socket (supervisor/door.py, DoorProtocol.write_body; Walrus's encrypted GETs use it).
WRITE_BODY = "mallee.write_body"


class Decoder(Protocol):
    """Turns stored bytes, fed in order, into the bytes to send (a stream cipher's context)."""

    def update(self, data: bytes | memoryview, /) -> bytes: ...

    def update_into(self, data: bytes | memoryview, buf: bytearray | memoryview, /) -> int:
        """Into `buf` (len(data) + 15 bytes at least, as `cryptography` asks); how many."""
        ...


@dataclass(frozen=True)
class FileBody:
    """A response body sent from a file (a stored object or a range of it). `file`: the file
    already open, when the handler opened it (whoever sends the response closes it)."""

    path: Path
    offset: int
    length: int
    file: BinaryIO | None = field(default=None, compare=False)
    # When the file holds the bytes transformed (Walrus: encrypted at rest): an offset in the file
    # -> a Decoder of what is read in order from there. None: sent as they are (and may be mapped).
    decode: Callable[[int], Decoder] | None = field(default=None, compare=False)

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
    """Who signed the request: an account's root identity, one of its IAM users, or a session of
    one of its roles (STS AssumeRole)."""

    account_id: str
    account_name: str
    access_key_id: str
    # The IAM unique id (AIDA…), the account id for the root identity, "<RoleId>:<session>" for a
    # role session (what GetCallerIdentity answers and aws:userid holds).
    user_id: str
    user_name: str | None = None  # None: the account's root identity, or a role session
    is_system_admin: bool = False  # the cloud administrator's account (Eucalyptus' "eucalyptus")
    session_token: str | None = None  # set for temporary (STS) credentials
    role_name: str | None = None  # set for a role session, with its role's path and session name
    role_path: str = "/"
    role_session_name: str | None = None

    @property
    def is_root(self) -> bool:
        return self.user_name is None and self.role_name is None

    @property
    def role_arn(self) -> str | None:
        """A role session's role: policies naming it apply to its sessions (aws:PrincipalArn)."""
        if self.role_name is None:
            return None
        return f"arn:aws:iam::{self.account_id}:role{self.role_path}{self.role_name}"

    @property
    def arn(self) -> str:
        if self.role_name is not None:
            return f"arn:aws:sts::{self.account_id}:assumed-role/{self.role_name}/{self.role_session_name}"
        if self.user_name is None:
            return f"arn:aws:iam::{self.account_id}:root"
        return f"arn:aws:iam::{self.account_id}:user/{self.user_name}"

    @property
    def principal_arn(self) -> str:
        """What the aws:PrincipalArn condition key holds: a role session's is its role's ARN."""
        return self.role_arn or self.arn


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
    # What authorization loaded of the resource the request names (Walrus: its bucket row, or None
    # when there is none), so that the handler does not look it up again.
    resource: Any = None
