"""The Walrus process: the S3 API (bodies streamed both ways), its rpc, heartbeats to the CLC.

S3 requests reach it on connections the public endpoint hands over (supervisor/handoff.py), relayed
by the CLC, or directly on its own port.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import os
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy.orm import Session

from mallee import __version__
from mallee.core import config as config_mod
from mallee.core import ids, metrics
from mallee.core.config import Config
from mallee.core.context import WRITE_BODY, FileBody, HttpRequest, HttpResponse, RequestContext
from mallee.core.errors import CloudError
from mallee.core.interprocess import SharedCounter, exclusive
from mallee.core.periodic import Periodic
from mallee.db import migrate
from mallee.db.group_commit import GroupCommitter
from mallee.db.session import Database
from mallee.drivers.objectstore.filesystem import FilesystemObjectStore
from mallee.protocol import routing
from mallee.protocol.dispatch import Operation
from mallee.protocol.gateway import Gateway
from mallee.protocol.serializer import serialize_error
from mallee.protocol.specs import load_service
from mallee.rpc import objectstorage
from mallee.rpc.cloud import Heartbeater, ServiceDescription
from mallee.rpc.contract import Empty, Handlers
from mallee.rpc.relay import relay
from mallee.rpc.transport import (
    CLIENT_HEADER,
    PREFIX,
    REQUEST_TIMEOUT,
    Client,
    Receive,
    Scope,
    Send,
    load_key,
    request_from_scope,
    send_response,
    serve_rpc,
    trusted_client,
)
from mallee.services.walrus import decoding, garbage, lifecycle, post_upload, quota, runtime
from mallee.services.walrus.access import S3Access
from mallee.services.walrus.bodies import INLINE_MAX
from mallee.services.walrus.bucket_cache import BucketCache
from mallee.services.walrus.bucket_config import cors_headers, preflight
from mallee.services.walrus.encryption import Keys, load_master_key
from mallee.services.walrus.handlers import REGISTRIES
from mallee.services.walrus.identity import RemoteIdentity
from mallee.services.walrus.object_layer import ObjectLayer, deferred_commits
from mallee.services.walrus.quota import Quotas
from mallee.services.walrus.storage_metrics import stored
from mallee.services.walrus.streaming import BridgeStream, BytesStream, SmallBodies
from mallee.services.walrus.unsupported import refuse_unsupported

log = logging.getLogger(__name__)
# Operations whose handlers use no request session: reads through a connection of their own
# (ObjectLayer.read), a PUT's row through the group committer. Opening and closing an unused
# session was ~6 % of a small GET's CPU.
_SESSIONLESS = frozenset(("GetObject", "HeadObject", "PutObject", "GetObjectAttributes"))
# Writes that check the bucket owner's quota inside their transaction: its limits are asked of the
# CLC before the transaction opens (no rpc inside one).
_QUOTA_CHECKED = frozenset(("CopyObject", "CompleteMultipartUpload"))

SMALL_BODY = 1024 * 1024  # bodies up to this size are read whole (XML payloads, small objects)
SEND_CHUNK = decoding.WINDOW  # mapped, not read (see decoding.mapped)
# Response files up to this size are read by the handler's thread and sent as one body: one send
# instead of three, and no file I/O on the event loop.
SMALL_FILES = 64 * 1024


class Walrus:
    """One Walrus worker process (`worker`: 0 .. walrus_workers-1). The workers of a host share the
    port, the database and the object store; worker 0 also runs the background jobs."""

    def __init__(self, cfg: Config, lifecycle_seconds: float = 60.0, worker: int = 0) -> None:
        self.cfg = cfg
        self.worker = worker
        home = cfg.data_dir / "walrus"
        home.mkdir(parents=True, exist_ok=True)
        # Power-safe commits: a PUT is acknowledged once its bytes and its metadata would survive
        # a power loss (the blob is fsynced before; group commit shares the commit's fsync).
        self.db = Database(cfg.database_url_for("walrus"), power_safe=True)
        with exclusive(home / "migrate.lock"):  # workers start together: one migrates
            migrate.upgrade(self.db.engine, "walrus")
        self.store = FilesystemObjectStore(home, "incoming" if worker == 0 else f"incoming-{worker}")
        self.key = load_key(cfg.deployment_key_file)
        self.identity = RemoteIdentity(Client(cfg.clc_url, self.key))
        self.buckets = BucketCache(self.db, SharedCounter(home / "buckets.generation"))
        self.writer = GroupCommitter(self.db, after_commit=self._sweep, lock=home / "writer.lock")
        self.sweeper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sweeper")
        self.access = S3Access(self.identity, self.buckets.get, self.db)
        self.quotas = Quotas(Client(cfg.clc_url, self.key), self.db)
        keys = Keys(load_master_key(cfg.walrus_master_key_file))
        self.objects = ObjectLayer(
            self.db, self.store, self.writer, self.quotas, keys, cfg.walrus_default_encryption
        )
        runtime.configure(self.objects, self.access, self.buckets)
        self.gateway = Gateway(
            REGISTRIES, self.access, cfg.region, unit_of_work=self._unit_of_work, s3_domain=cfg.s3_domain
        )
        self.pool = ThreadPoolExecutor(max_workers=16, thread_name_prefix="s3")
        self.small_bodies = SmallBodies(cfg.body_idle_seconds)
        # What its metrics page reads when scraped, besides the counters of all its workers.
        self.readings = (metrics.service_info("walrus", __version__), stored(self.db))
        self.rpc_handlers = Handlers()
        self.rpc_handlers.add(objectstorage.USAGE, self._usage)
        # Lifecycle rules are applied every `lifecycle_seconds`.
        self.lifecycle_job = Periodic(
            "lifecycle",
            lambda: lifecycle.expire_and_log(self.objects),
            lifecycle_seconds,
            wait_first=True,
        )
        self.heartbeater = Heartbeater(Client(cfg.clc_url, self.key), self.describe, cfg.heartbeat_seconds)

    def describe(self) -> ServiceDescription:
        return ServiceDescription(
            name=f"walrus-{self.cfg.host}",
            type="walrus",
            host=self.cfg.host,
            port=self.cfg.port("walrus"),
            version=__version__,
            detail={"objectstore": "filesystem", "workers": self.cfg.walrus_worker_count},
        )

    def _usage(self, _p: Empty) -> objectstorage.Usage:
        with self.db.session() as s:
            used = quota.usage(s)
        return objectstorage.Usage(accounts={a: objectstorage.AccountUsage(**u) for a, u in used.items()})

    @contextlib.contextmanager
    def _unit_of_work(self, ctx: RequestContext, operation: Operation) -> Iterator[None]:
        refuse_unsupported(operation.name, ctx.params)  # never answer as if it had been honoured
        if operation.name in _SESSIONLESS:
            yield
            return
        if operation.name in _QUOTA_CHECKED:
            bucket = self.buckets.get(str(ctx.params.get("Bucket", "")))
            if bucket is not None:
                self.quotas.limits(bucket.owner_account_id)
        with self.db.session() as s:
            ctx.session = s
            yield
        self._sweep(s)

    def _sweep(self, s: Session) -> None:
        """After a transaction committed: delete the blobs it stopped pointing at (reads: none),
        on the sweeper thread — unlinking is a quarter of a busy writer's time, and no caller
        needs to wait for it."""
        locators = garbage.queued(s)
        if locators:
            self.sweeper.submit(garbage.remove, locators, self.store, self.writer)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            return
        elif scope["path"].startswith(PREFIX):
            await serve_rpc(scope, receive, send, self.key, self.rpc_handlers)
        elif scope["path"] == "/healthz":
            await send_response(send, 200, [("content-type", "text/plain")], b"ok\n")
        else:
            request = request_from_scope(scope)
            if self._for_clc(scope, request):  # the public endpoint's metrics page is the CLC's
                await self._relay_to_clc(scope, receive, send)
            elif routing.classify(request, self.cfg.s3_domain).is_metrics:
                loop = asyncio.get_running_loop()
                page = await loop.run_in_executor(self.pool, metrics.render, *self.readings)
                await send_response(send, 200, [("content-type", metrics.CONTENT_TYPE)], page)
            else:
                await self.public(scope, receive, send, request)

    def _for_clc(self, scope: Scope, request: HttpRequest) -> bool:
        """A query-API request on a connection the front door handed over (its local port is the
        public one), after S3 requests: the CLC serves it."""
        server = scope.get("server")
        if not server or server[1] == self.cfg.port("walrus"):
            return False
        return not routing.classify(request, self.cfg.s3_domain).is_s3

    async def _relay_to_clc(self, scope: Scope, receive: Receive, send: Send) -> None:
        err = CloudError("ServiceUnavailable", "The cloud controller is not reachable; try again shortly.")
        await relay(
            scope,
            receive,
            send,
            self.cfg.host,
            self.cfg.port("clc"),
            self.key,
            lambda: serialize_error(load_service("ec2"), err, ids.request_id()),
        )

    async def public(self, scope: Scope, receive: Receive, send: Send, request: HttpRequest) -> None:
        """An S3 request (`request`: its head, from `scope`)."""
        loop = asyncio.get_running_loop()
        headers = request.headers
        # Forwarded by the CLC's front door: the client's address is the one it vouches for.
        request.remote_addr = trusted_client(self.key, headers.get(CLIENT_HEADER)) or request.remote_addr
        if request.method == "OPTIONS":  # a CORS preflight, answered from the bucket's CORS rules
            await self._send(
                send,
                scope,
                await loop.run_in_executor(
                    self.pool, preflight, request, self.buckets.get, self.cfg.s3_domain
                ),
            )
            return
        feeding: asyncio.Task[None] | None = None
        length = headers.get("content-length")
        if length is None and "transfer-encoding" not in headers:
            request.stream = BytesStream(b"")  # HTTP/1.1: no length, not chunked: no body
        elif length is not None and length.isdigit() and int(length) <= SMALL_BODY:
            body = await self.small_bodies.read(receive)
            if body is None:  # it stopped coming: answered, and the connection closed
                timeout = CloudError("RequestTimeout", REQUEST_TIMEOUT)
                response = serialize_error(load_service("s3"), timeout, ids.request_id())
                response.headers.append(("connection", "close"))
                await self._send(send, scope, response)
                return
            request.body = body
            request.stream = BytesStream(body)
        else:
            bridge = BridgeStream(loop, idle_seconds=self.cfg.body_idle_seconds)
            request.stream = bridge
            feeding = asyncio.create_task(bridge.feed(receive))
        handler = self.gateway.handle  # browser-based (form POST) uploads are no botocore operation:
        if post_upload.is_post_upload(request, self.cfg.s3_domain):
            handler = functools.partial(post_upload.handle, self.gateway)
        try:
            if self._answers_at_once(request):
                response = _answer(handler, request)
            elif self._puts_at_once(request):
                response = await _answer_then_commit(handler, request)
            else:
                response = await loop.run_in_executor(self.pool, _answer, handler, request)
        finally:
            if feeding is not None and not feeding.done():
                feeding.cancel()
        if isinstance(request.stream, BridgeStream) and request.stream.timed_out:
            response.headers.append(("connection", "close"))  # the rest of its body never came
        try:
            if headers.get("origin"):  # CORS: a request with an Origin the bucket's rules allow
                name = routing.classify(request, self.cfg.s3_domain).bucket
                bucket = await loop.run_in_executor(self.pool, self.buckets.get, name)
                response.headers += cors_headers(request, bucket)
            await self._send(send, scope, response)
        finally:
            _close(response.files)

    def _answers_at_once(self, request: HttpRequest) -> bool:
        """Whether to answer on the event loop, without a handler thread: a GET or HEAD of one
        object with no query parameters and a signer already known here (or none). It then waits
        on nothing but local reads (the bucket cache, one indexed SQLite read, opening the blobs,
        small ones read whole) and costs about half the CPU: no thread hand-off and no contention
        for Python's lock between 16 handler threads. Anything that may wait longer (listings,
        writes, an unknown key resolved over rpc) goes to a handler thread."""
        if request.method not in ("GET", "HEAD") or request.query_string or request.body:
            return False
        return self._one_object(request) is not None and self._signer_known(request)

    def _puts_at_once(self, request: HttpRequest) -> bool:
        """Whether a PutObject is small enough to answer on the event loop (`_answer_then_commit`):
        its body (kept in its row, see bodies.BodySink) already read, no query but a presigned
        URL's, a known signer, its bucket cached and its owner's quota known to be unlimited (a
        quota means counting the account's objects). The loop then waits for nothing but the
        group commit, which it runs itself (`GroupCommitter.defer`) and awaits."""
        if request.method != "PUT" or "x-amz-copy-source" in request.headers:
            return False
        if "if-match" in request.headers or "if-none-match" in request.headers:
            return False  # a conditional write's answer waits for its commit
        length = request.headers.get("content-length") or ""
        if not (length.isdigit() and int(length) <= INLINE_MAX) or "transfer-encoding" in request.headers:
            return False
        if any(not name.lower().startswith("x-amz-") for name, _ in request.query_params()):
            return False
        bucket_name = self._one_object(request)
        if bucket_name is None or not self._signer_known(request):
            return False
        bucket = self.buckets.cached(bucket_name)
        return bucket is not None and self.quotas.unlimited(bucket.owner_account_id)

    def _one_object(self, request: HttpRequest) -> str | None:
        """The bucket, when the request names one object in it (path or virtual-hosted style)."""
        route = routing.classify(request, self.cfg.s3_domain)
        return route.bucket if route.bucket and route.has_key else None

    def _signer_known(self, request: HttpRequest) -> bool:
        """Anonymous, or signed with a key whose secret and policies are cached here."""
        route = routing.classify(request, self.cfg.s3_domain)
        if route.signature_error is not None:
            return False
        return route.signature is None or self.identity.knows(route.signature.access_key_id)

    async def _send(self, send: Send, scope: Scope, response: HttpResponse) -> None:
        head = scope["method"] == "HEAD"
        if not response.files:
            await send_response(send, response.status, response.headers, b"" if head else response.body)
            return
        total = sum(f.length for f in response.files)
        headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in response.headers]
        if not any(k.lower() == b"content-length" for k, _ in headers):
            headers.append((b"content-length", str(total).encode()))
        await send({"type": "http.response.start", "status": response.status, "headers": headers})
        if not head:
            write_body = scope.get("extensions", {}).get(WRITE_BODY)
            for file in response.files:
                await self._send_file(send, file, write_body)
        await send({"type": "http.response.body", "body": b""})

    async def _send_file(self, send: Send, file: FileBody, write_body: decoding.WriteBody | None) -> None:
        with file.open() as f:
            if os.fstat(f.fileno()).st_size < file.offset + file.length:
                raise OSError(f"{file.path} is shorter than its recorded size")  # never map past EOF
            if file.decode is not None:
                if not await decoding.send_on_a_thread(file, f, write_body):
                    for data in decoding.decoded(file, f):
                        await send({"type": "http.response.body", "body": data, "more_body": True})
                return
            position, end = file.offset, file.offset + file.length
            while position < end:
                chunk = decoding.mapped(f, position, min(SEND_CHUNK, end - position))
                position += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
                del chunk  # unmapped once the transport has sent it too

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                load_service("s3")
                removed = self.store.cleanup_incomplete()
                if removed:
                    log.info("removed %d incomplete uploads left by a previous run", removed)
                garbage.collect(self.db, self.store)
                if self.worker == 0:
                    self.heartbeater.start()
                    self.lifecycle_job.start()
                gc.freeze()  # as the CLC does: long-lived models out of the cyclic collector
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                self.heartbeater.stop()
                self.lifecycle_job.stop()
                self.pool.shutdown(wait=False)
                self.sweeper.shutdown(wait=True)  # it queues work for the writer: first
                self.writer.close()
                self.db.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def _answer(handler: Callable[[HttpRequest], HttpResponse], request: HttpRequest) -> HttpResponse:
    """The handler's response, with small files read into its body (see SMALL_FILES)."""
    response = handler(request)
    if response.files and sum(f.length for f in response.files) <= SMALL_FILES:
        try:
            response.body = b"".join(_read_file(f) for f in response.files)
        finally:
            _close(response.files)
        response.files = ()
    return response


async def _answer_then_commit(
    handler: Callable[[HttpRequest], HttpResponse], request: HttpRequest
) -> HttpResponse:
    """`_answer` on the event loop, where the handler must not wait for its commits: it queues them
    (`object_layer.deferred_commits`) and the answer goes out once they are done, or is the error
    one of them raised."""
    token = deferred_commits.set([])
    try:
        response = _answer(handler, request)
        pending = deferred_commits.get() or []
    finally:
        deferred_commits.reset(token)
    for future in pending:
        try:
            await asyncio.wrap_future(future)
        except Exception as exc:  # noqa: BLE001 - answered as the gateway would have
            request_id = next((v for k, v in response.headers if k == "x-amz-request-id"), "")
            err = exc if isinstance(exc, CloudError) else None
            if err is None:
                log.error("request %s failed in its commit", request_id, exc_info=exc)
                err = CloudError("InternalError", "An internal error has occurred.")
            failed = serialize_error(load_service("s3"), err, request_id)
            failed.headers += err.headers
            return failed
    return response


def _read_file(file: FileBody) -> bytes:
    with file.open() as f:
        data = os.pread(f.fileno(), file.length, file.offset)
    if len(data) != file.length:
        raise OSError(f"{file.path} is shorter than its recorded size")
    return file.decode(file.offset).update(data) if file.decode is not None else data


def _close(files: tuple[FileBody, ...]) -> None:
    """Close the files a handler opened (sent, read, or not sent at all)."""
    for file in files:
        if file.file is not None:
            file.file.close()


def create_app(cfg: Config | None = None, worker: int = 0) -> Walrus:
    return Walrus(cfg or config_mod.load(), worker=worker)
