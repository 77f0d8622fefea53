"""Issue 19's model-driven fuzz suite: every operation of ec2, iam, sts and s3 gets malformed
requests generated from its botocore model (support/fuzz.py), sent over HTTP (each service's in
their order, the services at once) and judged (support/fuzz_check.py): never a 5xx but 501 for
what Mallee does not implement, never a hang, every error in its service's AWS shape with a code
from the catalogue; afterwards the cloud still answers and no service restarted. Raw-socket cases
(framing, partial requests, oversize declarations) are judged apart, in
`test_raw_socket_abuse_leaves_the_cloud_answering`.

CI runs a fixed sample (a few cases of different kinds per operation); `pytest --fuzz-full
tests/functional/test_fuzz_models.py -s` runs every case. Both print their counts per class and
write them to `fuzz-summary.json` in pytest's base temporary directory.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import secrets
import socket
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from botocore.serialize import create_serializer

from mallee.protocol.specs import load_service
from support.cloud import Cloud
from support.fuzz import SEED, SERVICES, Case, text_baseline, typed_baseline
from support.fuzz_cases import service_cases
from support.fuzz_check import CLASSES, FAILURES, HANG_SECONDS, Answer, Tally, judge, send_lanes
from support.fuzz_post import PostCases
from support.fuzz_query import QueryCases

PROCESSES = ("clc", "walrus", "cc", "sc", "nc")


def implemented() -> frozenset[str]:
    """The operations Mallee serves ("service:Operation"): the CLC's and Walrus's handlers."""
    from mallee.services.clc.handlers import REGISTRIES as CLC
    from mallee.services.walrus.handlers import REGISTRIES as WALRUS

    registries = {**CLC, **WALRUS}
    return frozenset(f"{s}:{name}" for s, registry in registries.items() for name in registry.operations)


def _changes_nothing(case: Case, served: frozenset[str]) -> bool:
    """Whether a case cannot change what other cases see, whenever it is sent: one of a query
    service (an S3 request that lost a member may be another operation's) for an operation Mallee
    does not implement (refused before any handler), or about the service's requests in general."""
    return case.service != "s3" and (
        case.operation == "-" or f"{case.service}:{case.operation}" not in served
    )


def _alive(cloud: Cloud) -> None:
    """The canary: an EC2 and an S3 call answer."""
    assert cloud.client("ec2").describe_regions()["Regions"]
    assert "Buckets" in cloud.client("s3").list_buckets()


@pytest.mark.parametrize("service", ["ec2", "iam", "sts"])
def test_the_generator_names_members_as_botocore_does(service: str) -> None:
    """The cases spoil the members a client really sends: the generator's form encoding of each
    operation's baseline is botocore's."""
    model = load_service(service)
    serializer = create_serializer(model.protocol, include_validation=False)
    for name in model.operation_names:
        operation = model.operation_model(name)
        if operation.input_shape is None:
            continue
        ours = dict(
            QueryCases(service, operation).encode(
                operation.input_shape, text_baseline(operation.input_shape, full=True), ""
            )
        )
        body = serializer.serialize_to_request(typed_baseline(operation.input_shape, full=True), operation)[
            "body"
        ]
        theirs = {k: str(v) for k, v in body.items() if k not in ("Action", "Version")}
        assert ours == theirs, name


def test_every_operation_survives_malformed_input(
    cloud: Cloud, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> None:
    full = bool(request.config.getoption("--fuzz-full"))
    account = cloud.new_account("fuzz")
    s3 = cloud.client("s3", account)
    bucket = f"fuzz-{secrets.token_hex(4)}"
    s3.create_bucket(Bucket=bucket)
    s3.put_object(Bucket=bucket, Key="keep", Body=b"kept: the bucket is never empty")
    pids = {name: cloud.service_pids(name) for name in PROCESSES}
    assert all(pids.values()), pids

    served = implemented()
    tally = Tally()
    started = time.monotonic()

    def answered(case: Case, answer: Answer) -> None:
        tally.add(case, answer, judge(case, answer, served))
        if tally.sent % 5000 == 0:
            print(f"fuzz: {tally.sent} sent, {dict(tally.classes)}", flush=True)
        if answer.failure == "dropped":
            _alive(cloud)  # a dropped connection must not be a dead service

    try:
        missing = f"fuzz-missing-{secrets.token_hex(4)}"
        posts = PostCases(bucket, account.access_key_id, account.secret_access_key, cloud.region).all()
        # Each service's cases in their order, the services at once (none changes what another's
        # see); those of EC2, IAM and STS that change nothing (operations Mallee does not implement,
        # the services' general and authentication cases) in any order, alongside.
        lanes = {s: service_cases(s, full, SEED, bucket, missing, served) for s in SERVICES}
        lanes["s3"] = itertools.chain(posts, lanes["s3"])
        send_lanes(
            cloud, account, list(lanes.values()), answered, lambda case: _changes_nothing(case, served)
        )
    finally:
        tally.seconds = time.monotonic() - started
        summary = {"mode": "full" if full else "sample", "seed": SEED, **tally.summary()}
        path = tmp_path_factory.getbasetemp() / "fuzz-summary.json"
        path.write_text(json.dumps(summary, indent=1))
        print(f"\nfuzz ({summary['mode']}, seed {SEED}): {tally.sent} requests in {tally.seconds:.0f}s")
        print("  " + ", ".join(f"{cls} {tally.classes.get(cls, 0)}" for cls in CLASSES))
        for service, counts in tally.by_service.items():
            print(f"  {service}: {dict(counts)}")
        print(f"  summary: {path}")

    _alive(cloud)
    assert s3.get_object(Bucket=bucket, Key="keep")["Body"].read().startswith(b"kept")
    assert {name: cloud.service_pids(name) for name in PROCESSES} == pids, "a service restarted"
    failures = tally.failures[:25]
    assert not failures, f"{len(tally.failures)} failures:\n" + json.dumps(failures, indent=1)
    assert set(tally.classes) <= set(CLASSES) - set(FAILURES)
    assert tally.classes["client-error"] > tally.sent // 2  # the cases are refused, not ignored


# -- headers of the cloud's own, sent from outside ------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "header"),
    [
        ("POST", "/", "x-mallee-client"),  # the front door's vouching for a client's address
        ("GET", "/fuzz-bucket/key", "x-mallee-client"),
        # the rpc's seal headers, each the only bad one (so each is read): date, nonce, contract
        ("POST", "/internal/v1/heartbeat", "x-mallee-date"),
        ("POST", "/internal/v1/heartbeat", "x-mallee-nonce"),
        ("POST", "/internal/v1/heartbeat", "x-mallee-contract"),
    ],
)
def test_internal_headers_with_non_ascii_values_are_refused_not_500(
    cloud: Cloud, method: str, path: str, header: str
) -> None:
    now = str(int(time.time()))
    value = f"10.0.0.1 {now} \xe9\xe9" if header == "x-mallee-client" else f"1\xe9{now}"
    rpc = {"x-mallee-date": now, "x-mallee-nonce": secrets.token_hex(12), "x-mallee-contract": "cloud/1"}
    headers = {**rpc, header: value, "Content-Type": "application/x-www-form-urlencoded"}
    parsed = urllib.parse.urlparse(cloud.endpoint)
    conn = http.client.HTTPConnection(parsed.hostname, parsed.port, timeout=HANG_SECONDS)
    conn.request(method, path, body=b"Action=DescribeRegions&Version=2016-11-15", headers=headers)
    response = conn.getresponse()
    assert response.status < 500, response.read()[:300]
    _alive(cloud)


# -- raw sockets ----------------------------------------------------------------------------------


def _exchange(cloud: Cloud, parts: list[bytes], pause: float = 0.0) -> Answer:
    """Send `parts` (pausing between them) on a fresh connection; the first answer, or why none."""
    parsed = urllib.parse.urlparse(cloud.endpoint)
    started = time.monotonic()
    reply = b""
    with socket.create_connection((parsed.hostname, parsed.port), timeout=HANG_SECONDS) as s:
        try:
            for part in parts:
                s.sendall(part)
                time.sleep(pause)
            while not _complete(reply):
                chunk = s.recv(65536)
                if not chunk:
                    break
                reply += chunk
        except TimeoutError:
            return Answer(None, [], reply, time.monotonic() - started, "hang")
        except (ConnectionResetError, BrokenPipeError):
            pass
    seconds = time.monotonic() - started
    if not reply:
        return Answer(None, [], b"", seconds, "closed")
    try:
        status = int(reply.split(b" ", 2)[1])
    except (IndexError, ValueError):
        return Answer(None, [], reply, seconds, "not-http")
    return Answer(status, [], reply, seconds)


def _complete(reply: bytes) -> bool:
    head, sep, body = reply.partition(b"\r\n\r\n")
    if not sep:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value.strip())
    return True


def _raw_cases(host: bytes) -> dict[str, tuple[list[bytes], float]]:
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    query = b"POST / HTTP/1.1\r\nHost: " + host + b"\r\n" + form
    s3 = b"PUT /fuzz-raw/key HTTP/1.1\r\nHost: " + host + b"\r\n"
    whole = b"Action=DescribeRegions&Version=2016-11-15"
    return {
        "garbage-request-line": ([b"\x00\x01\x02 NOT HTTP\r\n\r\n"], 0),
        "unknown-version": ([b"GET / HTTP/9.9\r\nHost: " + host + b"\r\n\r\n"], 0),
        "no-host": ([b"GET / HTTP/1.1\r\n\r\n"], 0),
        "lf-only": ([b"GET / HTTP/1.1\nHost: " + host + b"\n\n"], 0),
        "header-without-colon": ([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nNoColonHere\r\n\r\n"], 0),
        "nul-in-header": ([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-A: a\x00b\r\n\r\n"], 0),
        "control-char-in-authorization": (
            [query + b"Authorization: AWS4\x01\r\nContent-Length: 41\r\n\r\n" + whole],
            0,
        ),
        "obsolete-fold": ([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-A: a\r\n b\r\n\r\n"], 0),
        "huge-uri": ([b"GET /" + b"a" * 100_000 + b" HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"], 0),
        "many-headers": ([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\n" + b"X-A: b\r\n" * 5000 + b"\r\n"], 0),
        "length-and-chunked": (
            [query + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"],
            0,
        ),
        "two-lengths": ([query + b"Content-Length: 5\r\nContent-Length: 41\r\n\r\n" + whole], 0),
        "negative-length": ([query + b"Content-Length: -1\r\n\r\n"], 0),
        "non-numeric-length": ([query + b"Content-Length: abc\r\n\r\n"], 0),
        "huge-declared-query": ([query + b"Content-Length: 99999999999999999999\r\n\r\n" + whole], 0),
        "huge-declared-s3": ([s3 + b"Content-Length: 5368709120\r\n\r\nabc"], 0),
        "bad-chunk-size": ([query + b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n"], 0),
        "truncated-chunks": ([query + b"Transfer-Encoding: chunked\r\n\r\n10\r\nabc"], 0),
        "partial-body": ([query + b"Content-Length: 100\r\n\r\n" + whole], 0),
        "partial-head": ([b"GET / HTTP/1.1\r\nHost: " + host + b"\r\nX-Partial: yes"], 0),
        "slow-head": ([b"GET / HT", b"TP/1.1\r\nHo", b"st: " + host + b"\r\n\r\n"], 1.0),
        "expect-continue-no-body": ([query + b"Expect: 100-continue\r\nContent-Length: 10\r\n\r\n"], 0),
        "pipelined": ([(query + b"Content-Length: 41\r\n\r\n" + whole) * 3], 0),
        "http10-no-host": ([b"GET / HTTP/1.0\r\n\r\n"], 0),
        "unknown-method": ([b"BREW / HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"], 0),
        "absolute-uri": ([b"GET http://evil.example/ HTTP/1.1\r\nHost: " + host + b"\r\n\r\n"], 0),
        "connect": ([b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n"], 0),
    }


def test_raw_socket_abuse_leaves_the_cloud_answering(cloud: Cloud) -> None:
    """Bad framing, partial requests and oversize declarations, on raw sockets: no 5xx, no hang
    past HANG_SECONDS, and the cloud still answers."""
    pids = {name: cloud.service_pids(name) for name in PROCESSES}
    host = urllib.parse.urlparse(cloud.endpoint).netloc.encode()
    outcomes: dict[str, Any] = {}
    bad: dict[str, Any] = {}

    def exchange(case: tuple[list[bytes], float]) -> Answer | None:
        with contextlib.suppress(ConnectionRefusedError):
            return _exchange(cloud, *case)
        return None

    # Each case on a connection of its own, all at once: several wait out the door's timeouts.
    cases = _raw_cases(host)
    with ThreadPoolExecutor(len(cases)) as pool:
        answers = dict(zip(cases, pool.map(exchange, cases.values()), strict=True))
    for name, answer in answers.items():
        if answer is not None:
            outcomes[name] = (answer.status or answer.failure, round(answer.seconds, 1))
            if answer.failure == "hang" or answer.seconds > HANG_SECONDS or (answer.status or 0) >= 500:
                bad[name] = (answer.status, answer.failure, round(answer.seconds, 1), answer.body[:200])
    print("\nraw-socket cases:", json.dumps(outcomes, indent=1))
    _alive(cloud)
    assert not bad, bad
    assert {name: cloud.service_pids(name) for name in PROCESSES} == pids, "a service restarted"
