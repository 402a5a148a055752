"""The edge service's FastAPI application: :func:`create_app` and :func:`serve`.

One process serves any number of workflow databases, each under ``/db/{name}`` (``name`` is
the site directory's name). Every route there needs a bearer token whose user holds a role on
that database (:mod:`balsam.server.deps`); only ``/health`` and the OpenAPI document are open,
and they say nothing about any database.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from balsam.backends.base import Backend
from balsam.backends.factory import open_local_backend
from balsam.config import Site
from balsam.errors import ConfigError
from balsam.private_files import refuse_shared
from balsam.server import errors
from balsam.server.auth import AuthStore
from balsam.server.deps import Limits, ServerState
from balsam.server.routers import account, apps, batchjobs, jobs, service, sessions, stream

log = logging.getLogger(__name__)

#: How long a stopping server lets requests still running finish before it cancels them.
GRACEFUL_SHUTDOWN_SECONDS = 10

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class BodyLimit:
    """ASGI middleware: a 413 for a request body over ``limit`` bytes.

    A declared ``content-length`` is checked before anything is read; a body without one
    (chunked) is read here, at most ``limit`` bytes of it, and replayed to the app.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            if not declared.isdigit() or int(declared) > self.limit:
                await self._refuse(send)
            else:
                await self.app(scope, receive, send)
            return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            body += message.get("body", b"")
            if len(body) > self.limit:
                await self._refuse(send)
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    async def _refuse(self, send: Send) -> None:
        body = b'{"detail":"request body too large (limit %d bytes)"}' % self.limit
        headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": 413, "headers": headers})
        await send({"type": "http.response.body", "body": body})


def create_app(
    databases: dict[str, Backend], auth: AuthStore, limits: Limits | None = None
) -> FastAPI:
    """The application serving ``databases`` (name -> Backend), authorized by ``auth``."""
    limits = limits or Limits()
    app = FastAPI(
        title="Balsam edge service",
        version="1",
        description="Balsam workflow databases over HTTP (docs/server.md).",
    )
    app.state.balsam = ServerState(databases=databases, auth=auth, limits=limits)
    app.state.balsam_streams = stream.Streams(limits)
    errors.install(app)
    for module in (apps, jobs, sessions, batchjobs, service, stream, account):
        app.include_router(module.router)

    @app.get("/health", tags=["health"])
    def health() -> dict[str, str]:
        """Liveness only: no database names, no counts."""
        return {"status": "ok"}

    app.add_middleware(BodyLimit, limit=limits.max_body_bytes)
    return app


def open_databases(sites: list[Site]) -> dict[str, Backend]:
    """A LocalBackend per site, by directory name (ConfigError on a name given twice)."""
    databases: dict[str, Backend] = {}
    try:
        for site in sites:
            if site.name in databases:
                raise ConfigError(f"two workflow databases are named {site.name!r}")
            databases[site.name] = open_local_backend(site, retry=False)
    except BaseException:
        for backend in databases.values():
            backend.close()
        raise
    return databases


#: Where the worker processes of ``balsam server start --workers N`` find what to serve:
#: the site directories (``os.pathsep``-separated) and the server's state directory.
SITES_ENV = "BALSAM_SERVER_SITES"
STATE_ENV = "BALSAM_SERVER_STATE"
#: The workers' long-poll cap (``--max-wait``), seconds.
MAX_WAIT_ENV = "BALSAM_SERVER_MAX_WAIT"


def app_from_environment() -> FastAPI:
    """The application one worker process serves, from :data:`SITES_ENV` and
    :data:`STATE_ENV`: uvicorn starts its workers as new interpreters, which import this by
    name (an application object, with its open databases, cannot be handed over)."""
    from balsam.config import load_site

    sites = [load_site(path) for path in os.environ[SITES_ENV].split(os.pathsep)]
    auth = AuthStore.open(Path(os.environ[STATE_ENV]), create=False)
    limits = Limits(max_wait_seconds=float(os.environ[MAX_WAIT_ENV]))
    return create_app(open_databases(sites), auth, limits)


def serve(
    sites: list[Site],
    state_dir: Path | None,
    host: str,
    port: int,
    tls: tuple[Path, Path] | None = None,
    limits: Limits | None = None,
    workers: int = 1,
) -> None:
    """Run the service on uvicorn in the foreground until interrupted (ConfigError, before
    anything starts, without a state directory made by ``balsam server add-user``).

    The socket is bound here, so ``port`` 0 lets the kernel choose; the address actually
    bound is printed on stdout (``balsam server: serving NAMES on http://HOST:PORT``).
    ``tls`` (certificate file, key file) serves HTTPS; the key must be private (0600).
    ``limits`` defaults to :class:`Limits`' defaults.
    ``workers`` above 1 serves from that many processes sharing the socket (uvicorn's
    supervisor restarts one that dies), so requests are not queued behind one interpreter.
    """
    import uvicorn

    # Checked before anything is opened or bound: a server without users would refuse every
    # request, so starting one is a mistake, and a start that fails leaves nothing behind.
    auth = AuthStore.open(state_dir, create=False)
    if tls is not None:
        check_tls_files(*tls)
    databases = open_databases(sites)
    try:
        sock = _bind(host, port)
        app = create_app(databases, auth, limits)
        bound_host, bound_port = sock.getsockname()[:2]
        where = f"[{bound_host}]" if ":" in bound_host else bound_host
        scheme = "https" if tls else "http"
        print(
            f"balsam server: serving {', '.join(databases)} on {scheme}://{where}:{bound_port}",
            flush=True,
        )
        options: dict[str, Any] = {
            "log_level": "warning",
            "access_log": False,
            "ssl_certfile": str(tls[0]) if tls else None,
            "ssl_keyfile": str(tls[1]) if tls else None,
            # A backstop: requests still running this long after a stop are cancelled.
            "timeout_graceful_shutdown": GRACEFUL_SHUTDOWN_SECONDS,
        }
        if workers == 1:
            config = uvicorn.Config(app, **options)
            _server_ending_streams(uvicorn, config, app.state.balsam_streams).run(sockets=[sock])
            return
        # Checked and opened here, so a bad site fails before anything is served; each
        # worker opens its own connections.
        for backend in databases.values():
            backend.close()
        os.environ[SITES_ENV] = os.pathsep.join(str(site.path) for site in sites)
        os.environ[STATE_ENV] = str(auth.path.parent)
        os.environ[MAX_WAIT_ENV] = str((limits or Limits()).max_wait_seconds)
        config = uvicorn.Config(
            f"{__name__}:app_from_environment", factory=True, workers=workers, **options
        )
        # The supervisor `uvicorn.run(..., workers=N)` runs, given the socket bound above so
        # that port 0 works and the address printed is the one served. Its workers run
        # uvicorn's own Server, which does not end the event streams first: a stop with
        # streams open takes the graceful-shutdown backstop (GRACEFUL_SHUTDOWN_SECONDS).
        from uvicorn.supervisors import Multiprocess

        Multiprocess(config, sockets=[sock]).run()
    finally:
        for backend in databases.values():
            backend.close()


def _server_ending_streams(uvicorn: Any, config: Any, streams: stream.Streams) -> Any:
    """A uvicorn server that ends the event streams when it shuts down: uvicorn waits for
    open responses to finish, and a stream would not finish by itself."""

    class Server(uvicorn.Server):  # type: ignore[misc]
        async def shutdown(self, sockets: Any = None) -> None:
            streams.close()
            await super().shutdown(sockets)

    return Server(config)


def check_tls_files(cert: Path, key: Path) -> None:
    """ConfigError unless both files exist and the key is readable by its owner only."""
    for what, path in (("certificate", cert), ("key", key)):
        if not path.is_file():
            raise ConfigError(f"TLS {what} file {path} does not exist")
    refuse_shared(key, "TLS key file")


def _bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on ``host:port`` (ConfigError when that fails)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # Accepted connections inherit it: a response's headers and body are separate writes,
    # and with Nagle the body waits for the client's delayed ACK (~40 ms per request).
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock
