"""The CLC process: the public endpoint (EC2, IAM, STS; S3 routed by the same front door) and the
internal rpc that components heartbeat to. A plain ASGI app, served by uvicorn."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from urllib.parse import quote

from botocore.auth import S3SigV4QueryAuth
from botocore.awsrequest import AWSRequest
from botocore.credentials import ReadOnlyCredentials
from sqlalchemy import select

from mallee import __version__
from mallee.core import config as config_mod
from mallee.core import ids, metrics
from mallee.core.config import Config
from mallee.core.context import HttpRequest, RequestContext
from mallee.core.errors import CloudError, ConfigError
from mallee.core.periodic import Periodic
from mallee.db.session import Database
from mallee.protocol import routing
from mallee.protocol.auth import AuthError
from mallee.protocol.dispatch import Operation
from mallee.protocol.gateway import Gateway
from mallee.protocol.serializer import serialize_error
from mallee.protocol.specs import load_service
from mallee.rpc import cloud
from mallee.rpc.contract import Empty, Handlers, Ok, StateChanged
from mallee.rpc.relay import relay
from mallee.rpc.transport import (
    CLIENT_HEADER,
    PREFIX,
    Client,
    Receive,
    RpcError,
    Scope,
    Send,
    check_declared_length,
    load_key,
    read_body,
    request_from_scope,
    send_response,
    serve_rpc,
    trusted_client,
)
from mallee.services.clc import components, metadata, peers
from mallee.services.clc.handlers import REGISTRIES
from mallee.services.clc.iam import store
from mallee.services.clc.iam.identity import Identity
from mallee.services.clc.identity_document import DocumentSigner
from mallee.services.clc.instance_metrics import instances_by_state
from mallee.services.clc.reconcile import Reconciler
from mallee.services.clc.tables import AccessKey, Account

log = logging.getLogger(__name__)

RECONCILE_SECONDS = 2.0


class CloudController:
    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.db = Database(cfg.database_url_for("clc"))
        self.identity = Identity(self.db)
        self.gateway = Gateway(REGISTRIES, self.identity, cfg.region, unit_of_work=self._unit_of_work)
        self.key = load_key(cfg.deployment_key_file)
        self.signer = DocumentSigner.of(cfg.data_dir)  # instance identity documents
        # Handlers are synchronous (SQLAlchemy); a small pool keeps the event loop free.
        self.pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="api")
        peers.configure(
            peers.Peers(
                walrus=Client(cfg.url("walrus"), self.key),
                clusters=peers.ClusterRegistry(self.db, self.key),
                storage=peers.StorageRegistry(self.db, self.key),
                presign=self._presigner(),
                public_pool=cfg.public_pool,
                max_volumes=cfg.max_volumes_per_account,
                max_volume_gib=cfg.max_volume_gib_per_account,
                key=self.key,
            )
        )
        self.reconciler = Periodic(
            "reconcile", Reconciler(self.db, peers.get().clusters, peers.get().storage).run, RECONCILE_SECONDS
        )
        self.background = (
            Periodic("clc-heartbeat", self.register_self, cfg.heartbeat_seconds),
            self.reconciler,
        )
        # What its metrics page reads when scraped, besides the counters (core/metrics.py).
        self.readings = (metrics.service_info("clc", __version__), instances_by_state(self.db))
        self.rpc_handlers = Handlers()
        self.rpc_handlers.add(cloud.HEARTBEAT, self._heartbeat)
        self.rpc_handlers.add(cloud.RESOLVE_KEY, self._resolve_key)
        self.rpc_handlers.add(cloud.ACCOUNT_QUOTA, self._account_quota)
        self.rpc_handlers.add(cloud.METADATA, self._metadata)
        self.rpc_handlers.add(cloud.INSTANCES_CHANGED, self._instances_changed)
        self.rpc_handlers.add(cloud.SYSTEM_CREDENTIALS, self._system_credentials)

    @contextmanager
    def _unit_of_work(self, ctx: RequestContext, operation: Operation) -> Iterator[None]:
        with self.db.session() as s:
            ctx.session = s
            yield
        if ctx.service in ("iam", "sts") and not operation.name.startswith(("Get", "List")):
            self.identity.invalidate()  # a changed key or policy applies to the very next request
        if ctx.service == "ec2" and not operation.name.startswith(("Describe", "Get")):
            self.reconciler.wake()  # nodes hear of a changed network or instance at once

    def _heartbeat(self, beat: cloud.ServiceDescription) -> Ok:
        with self.db.session() as s:
            components.record(s, beat)
        return Ok()

    def _instances_changed(self, _change: StateChanged) -> Ok:
        self.reconciler.wake()  # a cluster saw a change: reconcile now, not at the next tick
        return Ok()

    def _resolve_key(self, p: cloud.ResolveKey) -> cloud.KeyIdentity:
        """For components that authenticate requests themselves (Walrus): a key's identity,
        secret and IAM policy documents, or the AuthError kind that refuses it."""
        try:
            return self.identity.describe_key(p.access_key_id, p.session_token)
        except AuthError as err:
            return cloud.KeyIdentity(error=err.kind, message=err.message)

    def _system_key(self) -> AccessKey:
        """The system account's root access key: the cloud's own S3 identity."""
        with self.db.session() as s:
            account = store.system_account(s)
            key = None
            if account is not None:
                key = s.scalar(
                    select(AccessKey).where(
                        AccessKey.account_id == account.id,
                        AccessKey.user_id.is_(None),
                        AccessKey.session_token.is_(None),
                        AccessKey.active.is_(True),
                    )
                )
        if key is None:
            raise ConfigError("the system account has no active access key; run `mallee up` once")
        return key

    def _system_credentials(self, _p: Empty) -> cloud.SystemCredentials:
        """For components that keep the cloud's data in Walrus (the SC's snapshot chunks)."""
        try:
            key = self._system_key()
        except ConfigError as exc:
            raise RpcError(503, "NoSystemKey", str(exc)) from exc
        return cloud.SystemCredentials(
            access_key_id=key.id,
            secret_access_key=key.secret,
            endpoint=self.cfg.endpoint_url,
            region=self.cfg.region,
        )

    def _presigner(self) -> peers.Presigner:
        """Presigned GETs of image objects, signed with the system account's key."""
        key = self._system_key()
        credentials = ReadOnlyCredentials(key.id, key.secret, None)
        endpoint, region = self.cfg.endpoint_url, self.cfg.region

        def presign(bucket: str, object_key: str, seconds: int) -> str:
            url = f"{endpoint}/{quote(bucket)}/{quote(object_key, safe='/')}"
            request = AWSRequest(method="GET", url=url)
            S3SigV4QueryAuth(credentials, "s3", region, expires=seconds).add_auth(request)
            return str(request.prepare().url)

        return presign

    def _metadata(self, p: cloud.MetadataRequest) -> cloud.MetadataAnswer:
        with self.db.session() as s:
            if p.token_request:
                status, body, hops = metadata.token_answer(s, p.vpc_id, p.private_ip)
                return cloud.MetadataAnswer(status=status, body=body, hop_limit=hops)
            status, body = metadata.answer(s, p.vpc_id, p.private_ip, p.path, self.signer, p.with_token)
        return cloud.MetadataAnswer(status=status, body=body)

    def _account_quota(self, p: cloud.AccountRef) -> cloud.Quota:
        with self.db.session() as s:
            account = s.get(Account, p.account_id)
            if account is None:
                return cloud.Quota()
            return cloud.Quota(max_objects=account.max_objects, max_bytes=account.max_bytes)

    def register_self(self) -> None:
        self._heartbeat(
            cloud.ServiceDescription(
                name="clc", type="clc", host=self.cfg.host, port=self.cfg.port("clc"), version=__version__
            )
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        if path.startswith(PREFIX):
            await serve_rpc(scope, receive, send, self.key, self.rpc_handlers)
            return
        if path == "/healthz":
            await send_response(send, 200, [("content-type", "text/plain")], b"ok\n")
            return
        await self._public(scope, receive, send)

    def for_walrus(self, request: HttpRequest) -> bool:
        """Whether a public request is S3's, from its head alone (the front door's server hands
        such connections to Walrus; see supervisor/handoff.py)."""
        path = request.raw_path
        return (
            not path.startswith(PREFIX)
            and path != "/healthz"
            and routing.classify(request, self.cfg.s3_domain).is_s3
        )

    async def _public(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = request_from_scope(scope)  # the head first: S3 is routed before any body is read
        if routing.classify(request, self.cfg.s3_domain).is_metrics:
            page = await asyncio.get_running_loop().run_in_executor(self.pool, metrics.render, *self.readings)
            await send_response(send, 200, [("content-type", metrics.CONTENT_TYPE)], page)
            return
        # Relayed by Walrus (a query-API request on a connection handed to it): the client's address.
        request.remote_addr = (
            trusted_client(self.key, request.headers.get(CLIENT_HEADER)) or request.remote_addr
        )
        if self.for_walrus(request):  # on a connection the front door kept
            err = CloudError("ServiceUnavailable", "Walrus is not reachable; try again shortly.")
            await relay(
                scope,
                receive,
                send,
                self.cfg.host,
                self.cfg.port("walrus"),
                self.key,
                lambda: serialize_error(load_service("s3"), err, ids.request_id()),
            )
            return
        try:
            check_declared_length(scope, self.cfg.max_request_body)
            body = await read_body(receive, self.cfg.max_request_body, self.cfg.body_idle_seconds)
        except CloudError as err:
            # Closing after this answer lingers while the client still sends (supervisor/door.py).
            service = routing.classify(request, self.cfg.s3_domain).shape
            response = serialize_error(load_service(service), err, ids.request_id())
            await send_response(
                send, response.status, response.headers + [("connection", "close")], response.body
            )
            return
        request.body = body
        loop = asyncio.get_running_loop()
        response = await loop.run_in_executor(self.pool, self.gateway.handle, request)
        body_out = b"" if request.method == "HEAD" else response.body
        await send_response(send, response.status, response.headers, body_out)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                for name in ("ec2", "iam", "sts", "s3"):
                    load_service(name)  # parse the models now, not on a client's first request
                for task in self.background:
                    task.start()
                # The service models are ~100k long-lived objects; keeping them out of the cyclic
                # collector's generations cut request latency measurably (bench/api.py).
                gc.freeze()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                for task in self.background:
                    task.stop()
                self.pool.shutdown(wait=False)
                self.db.dispose()
                await send({"type": "lifespan.shutdown.complete"})
                return


def create_app(cfg: Config | None = None) -> CloudController:
    return CloudController(cfg or config_mod.load())
