"""Sending the fuzz suite's cases (support/fuzz.py) to a cloud and judging each answer.

Every answer falls in one class: `ok` (2xx), `client-error` (a 4xx error in the AWS shape of its
service, with a code from the catalogue), `not-implemented` (501 NotImplemented, in shape), or a
failure: `server-error` (any other 5xx), `hang` (no answer within HANG_SECONDS), `dropped` (the
connection closed without an answer), `unshaped` (an error that is not its service's AWS error
document) or `unknown-code` (a well-formed error whose code is not in the catalogue).
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from botocore.auth import S3SigV4Auth, S3SigV4QueryAuth, SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

import mallee
from mallee.core.errors import STATUS
from mallee.protocol.specs import load_service
from support.cloud import Cloud, Keys
from support.fuzz import SERVICES, Case

HANG_SECONDS = 30.0  # no answer to a whole request within this is a hang
FAILURES = ("server-error", "hang", "dropped", "unshaped", "unknown-code")
CLASSES = ("ok", "client-error", "not-implemented", *FAILURES)
_REQUEST_ID = re.compile(r"[0-9A-Za-z-]{8,}")


@cache
def catalogue() -> frozenset[str]:
    """The error codes the cloud may answer: core/errors.py's table, the codes its source raises
    (CloudError("Code", …), `code = "…"` / `NOT_FOUND = "…"` assignments, (code, message) tables,
    EC2's `X.Malformed` twin of each `X.NotFound`) and the error shapes of the service models."""
    codes = set(STATUS)
    camel = r"[A-Z][A-Za-z0-9]*(?:\.[A-Z][A-Za-z0-9]*)?"
    for path in Path(mallee.__file__).parent.rglob("*.py"):
        text = path.read_text(encoding="utf-8")
        codes.update(re.findall(rf'CloudError\(\s*"({camel})"', text))
        codes.update(re.findall(rf'\(\s*"({camel})",\s*f?"', text))  # ("Code", "message") rows
        for line in text.splitlines():
            if re.search(r"\bcode\w*\s*[:=]|not_found", line, re.IGNORECASE):
                codes.update(re.findall(rf'"({camel})"', line))
        codes.update(re.findall(r'"(Invalid[A-Za-z]+\.(?:NotFound|Malformed|Duplicate))"', text))
    # EC2's id errors come in pairs, and handlers derive one from the other (resources.check_id).
    codes.update(
        code.replace(".NotFound", ".Malformed") for code in list(codes) if code.endswith(".NotFound")
    )
    for service in SERVICES:
        model = load_service(service)
        for name in model.shape_names:
            shape = model.shape_for(name)
            if shape.metadata.get("exception"):
                codes.add(str(shape.metadata.get("error", {}).get("code", name)))
    return frozenset(codes)


@dataclass
class Answer:
    status: int | None
    headers: list[tuple[str, str]]
    body: bytes
    seconds: float
    failure: str = ""  # "hang" or "dropped" when there is no answer


@dataclass
class Verdict:
    cls: str
    status: int | None
    code: str
    note: str = ""


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _text(element: ET.Element | None, name: str) -> str:
    if element is None:
        return ""
    for child in element:
        if _local(child.tag) == name:
            return child.text or ""
    return ""


def _child(element: ET.Element | None, name: str) -> ET.Element | None:
    if element is None:
        return None
    return next((c for c in element if _local(c.tag) == name), None)


def error_code(service: str, method: str, answer: Answer) -> tuple[str, str]:
    """(code, "") for an error in the AWS shape of `service`, else ("", what is wrong)."""
    headers = {k.lower(): v for k, v in answer.headers}
    if service == "s3" and method == "HEAD":
        ok = bool(_REQUEST_ID.fullmatch(headers.get("x-amz-request-id", "")))
        return ("(head)", "") if ok else ("", "a HEAD error without an x-amz-request-id header")
    try:
        root = ET.fromstring(answer.body)
    except ET.ParseError as exc:
        return "", f"not XML ({exc}): {answer.body[:120]!r}"
    tag = _local(root.tag)
    if service == "s3":
        code, request_id = _text(root, "Code"), _text(root, "RequestId")
        if (
            tag != "Error"
            or not code
            or _child(root, "Message") is None
            or not _REQUEST_ID.fullmatch(request_id)
        ):
            return "", f"not S3's <Error> document: {answer.body[:160]!r}"
        if headers.get("x-amz-request-id") != request_id:
            return "", "x-amz-request-id differs from the document's RequestId"
        return code, ""
    if service == "ec2":
        error = _child(_child(root, "Errors"), "Error")
        code, request_id = _text(error, "Code"), _text(root, "RequestID")
        if tag != "Response" or not code or _child(error, "Message") is None:
            return "", f"not EC2's <Response><Errors> document: {answer.body[:160]!r}"
        if not _REQUEST_ID.fullmatch(request_id):
            return "", f"not EC2's <Response><Errors> document: {answer.body[:160]!r}"
        return code, ""
    error = _child(root, "Error")
    code, kind, request_id = _text(error, "Code"), _text(error, "Type"), _text(root, "RequestId")
    if (
        tag != "ErrorResponse"
        or not code
        or kind not in ("Sender", "Receiver")
        or _child(error, "Message") is None
    ):
        return "", f"not the query protocol's <ErrorResponse>: {answer.body[:160]!r}"
    if not _REQUEST_ID.fullmatch(request_id):
        return "", "an <ErrorResponse> without a RequestId"
    return code, ""


def judge(case: Case, answer: Answer, implemented: frozenset[str] = frozenset()) -> Verdict:
    """The class of `answer` to `case`; `implemented`: the operations ("service:Operation") that
    must not answer 501 (an S3 request that lost a member may be another operation's)."""
    if answer.failure:
        return Verdict(answer.failure, None, "", f"after {answer.seconds:.1f}s")
    status = answer.status or 0
    if answer.seconds > HANG_SECONDS:
        return Verdict("hang", status, "", f"answered after {answer.seconds:.1f}s")
    if 200 <= status < 400:
        return Verdict("ok", status, "")
    code, wrong = error_code(case.service, case.method, answer)
    if wrong:
        return Verdict("unshaped", status, "", wrong)
    if status == 501:
        if code not in ("NotImplemented", "(head)"):
            return Verdict("unshaped", status, code, "501 without NotImplemented")
        if case.service != "s3" and f"{case.service}:{case.operation}" in implemented:
            return Verdict("server-error", status, code, "501 from an operation Mallee implements")
        return Verdict("not-implemented", status, code)
    if status >= 500:
        return Verdict("server-error", status, code)
    if code != "(head)" and code not in catalogue():
        return Verdict("unknown-code", status, code)
    return Verdict("client-error", status, code)


class _DeclaredPayload(S3SigV4Auth):  # type: ignore[misc]  # botocore has no type hints
    """S3's signer, declaring (and signing) a given x-amz-content-sha256 instead of the body's."""

    def __init__(self, credentials: Credentials, service: str, region: str, declared: str) -> None:
        super().__init__(credentials, service, region)
        self.declared = declared

    def payload(self, request: AWSRequest) -> str:
        return self.declared or str(super().payload(request))


class Sender:
    """Signs and sends cases on kept-alive connections (one per signer)."""

    def __init__(self, cloud: Cloud, account: Keys) -> None:
        self.cloud = cloud
        self.account = account
        parsed = urllib.parse.urlparse(cloud.endpoint)
        self.host, self.port = str(parsed.hostname), int(parsed.port or 80)
        self.connections: dict[bool, http.client.HTTPConnection] = {}

    def _connection(self, admin: bool) -> http.client.HTTPConnection:
        if admin not in self.connections:
            self.connections[admin] = http.client.HTTPConnection(self.host, self.port, timeout=HANG_SECONDS)
        return self.connections[admin]

    def _drop(self, admin: bool) -> None:
        conn = self.connections.pop(admin, None)
        if conn is not None:
            conn.close()

    def close(self) -> None:
        for admin in list(self.connections):
            self._drop(admin)

    def prepare(self, case: Case) -> tuple[str, list[tuple[str, str]]]:
        """The target and headers to send, signed as the case says."""
        keys = self.cloud.admin if case.admin else self.account
        credentials = Credentials(keys.access_key_id, keys.secret_access_key)
        if case.presigned:  # signed in the query string: the case's headers go unsigned
            presigned = AWSRequest(method=case.method, url=self.cloud.endpoint + case.target)
            S3SigV4QueryAuth(credentials, "s3", self.cloud.region, expires=300).add_auth(presigned)
            return str(presigned.url)[len(self.cloud.endpoint) :], list(case.headers)
        request = AWSRequest(method=case.method, url=self.cloud.endpoint + case.target, data=case.body)
        if case.service != "s3" and not any(k.lower() == "content-type" for k, _ in case.headers):
            request.headers["Content-Type"] = "application/x-www-form-urlencoded; charset=utf-8"
        for name, value in case.headers:
            request.headers[name] = value  # HTTPHeaders keeps repeated names
        if case.signed and case.service == "s3":
            signer = _DeclaredPayload(credentials, case.service, self.cloud.region, case.payload_hash)
            signer.add_auth(request)
        elif case.signed:
            SigV4Auth(credentials, case.service, self.cloud.region).add_auth(request)
        return case.target, list(request.headers.items())

    def send(self, case: Case) -> Answer:
        target, headers = self.prepare(case)
        started = time.monotonic()
        for attempt in (1, 2):  # a kept-alive connection the server had closed: once more, anew
            conn = self._connection(case.admin)
            try:
                conn.putrequest(case.method, target, skip_accept_encoding=True)
                for name, value in headers:
                    conn.putheader(name, value)
                if case.body or case.method in ("POST", "PUT"):
                    conn.putheader("Content-Length", str(len(case.body)))
                conn.endheaders(case.body or None)
                response = conn.getresponse()
                body = response.read()
                answer = Answer(response.status, response.getheaders(), body, time.monotonic() - started)
                if response.will_close:
                    self._drop(case.admin)
                return answer
            except TimeoutError:
                self._drop(case.admin)
                return Answer(None, [], b"", time.monotonic() - started, "hang")
            except (http.client.HTTPException, ConnectionError, OSError) as exc:
                self._drop(case.admin)
                if attempt == 2 or isinstance(exc, socket.gaierror):
                    return Answer(None, [], b"", time.monotonic() - started, "dropped")
        raise AssertionError("unreachable")


def send_lanes(
    cloud: Cloud,
    account: Keys,
    lanes: list[Iterable[Case]],
    answered: Callable[[Case, Answer], None],
    anywhere: Callable[[Case], bool] = lambda case: False,
    helpers: int = 2,
) -> None:
    """Send every case of every lane, as so many clients at once: each lane's cases one after the
    other in their order, on a thread and kept-alive connections of the lane's own, but those
    `anywhere` says may go in any order (they change nothing), which `helpers` more threads send
    as they come. `answered(case, answer)` is called for every answer, one call at a time; when it
    raises, everything stops and its error is raised."""
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []
    local = threading.local()
    senders: list[Sender] = []
    in_flight = threading.BoundedSemaphore(8 * helpers)  # cases handed to the helpers, not yet sent

    def send(case: Case) -> None:
        if stop.is_set():
            return
        sender = getattr(local, "sender", None)
        if sender is None:
            sender = local.sender = Sender(cloud, account)
            with lock:
                senders.append(sender)
        answer = sender.send(case)
        with lock:
            if not stop.is_set():
                answered(case, answer)

    def failed(exc: BaseException) -> None:
        with lock:
            errors.append(exc)
            stop.set()

    def helped(case: Case) -> None:
        try:
            send(case)
        except BaseException as exc:
            failed(exc)
        finally:
            in_flight.release()

    def run(cases: Iterable[Case], pool: ThreadPoolExecutor) -> None:
        try:
            for case in cases:
                if stop.is_set():
                    return
                if anywhere(case):
                    in_flight.acquire()
                    pool.submit(helped, case)
                else:
                    send(case)
        except BaseException as exc:
            failed(exc)

    try:
        with ThreadPoolExecutor(helpers, thread_name_prefix="fuzz-any") as pool:
            threads = [
                threading.Thread(target=run, args=(lane, pool), name=f"fuzz-lane-{i}", daemon=True)
                for i, lane in enumerate(lanes)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
    finally:
        for sender in senders:
            sender.close()
    if errors:
        raise errors[0]


@dataclass
class Tally:
    """Counts per class (overall, per service, per kind) and the failures' details."""

    classes: Counter[str] = field(default_factory=Counter)
    by_service: dict[str, Counter[str]] = field(default_factory=dict)
    by_kind: dict[str, Counter[str]] = field(default_factory=dict)
    codes: Counter[str] = field(default_factory=Counter)
    failures: list[dict[str, object]] = field(default_factory=list)
    slowest: list[tuple[float, str]] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)  # the cases answered 2xx (the first 500)
    sent: int = 0
    seconds: float = 0.0

    def add(self, case: Case, answer: Answer, verdict: Verdict) -> None:
        self.sent += 1
        self.classes[verdict.cls] += 1
        self.by_service.setdefault(case.service, Counter())[verdict.cls] += 1
        self.by_kind.setdefault(case.kind, Counter())[verdict.cls] += 1
        if verdict.code:
            self.codes[f"{case.service}:{verdict.status}:{verdict.code}"] += 1
        self.slowest = sorted([*self.slowest, (answer.seconds, case.name)], reverse=True)[:10]
        if verdict.cls == "ok" and len(self.accepted) < 500:
            self.accepted.append(case.name)
        if verdict.cls in FAILURES:
            self.failures.append(
                {
                    "case": case.name,
                    "class": verdict.cls,
                    "status": verdict.status,
                    "code": verdict.code,
                    "note": verdict.note,
                    "request": f"{case.method} {case.target[:200]} body={case.body[:300]!r}",
                    "answer": answer.body[:300].decode("utf-8", "replace"),
                }
            )

    def summary(self) -> dict[str, object]:
        return {
            "sent": self.sent,
            "seconds": round(self.seconds, 1),
            "classes": {cls: self.classes.get(cls, 0) for cls in CLASSES},
            "by_service": {s: dict(c) for s, c in self.by_service.items()},
            "by_kind": {k: dict(c) for k, c in sorted(self.by_kind.items())},
            "codes": dict(self.codes.most_common()),
            "slowest": [[round(s, 2), name] for s, name in self.slowest],
            "failures": self.failures,
            "accepted": self.accepted,
        }
