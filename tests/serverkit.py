"""The edge service for tests: in process (an httpx.Client whose transport calls the ASGI app
through an anyio portal, so the synchronous RemoteBackend needs no socket) or a real uvicorn
subprocess on a loopback port it binds itself.

Not starlette's TestClient: it is moving to the httpx2 package, whose Client is not the
httpx.Client the RemoteBackend takes.
"""

from __future__ import annotations

import os
import re
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio.from_thread
import httpx
from fastapi import FastAPI

from balsam.backends.base import Backend
from balsam.backends.remote import RemoteBackend
from balsam.server.app import create_app
from balsam.server.auth import AuthStore, Role
from balsam.server.deps import Limits

BALSAM = str(Path(sys.executable).parent / "balsam")


class PortalTransport(httpx.BaseTransport):
    """A synchronous httpx transport into an ASGI app running on a portal's event loop."""

    def __init__(self, app: FastAPI, portal: anyio.from_thread.BlockingPortal) -> None:
        self._inner = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        self._portal = portal

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        async def send() -> tuple[int, httpx.Headers, bytes]:
            response = await self._inner.handle_async_request(request)
            body = b"".join([part async for part in response.stream])  # type: ignore[union-attr]
            return response.status_code, response.headers, body

        status, headers, body = self._portal.call(send)
        return httpx.Response(status, headers=headers, content=body, request=request)


@contextmanager
def in_process(
    databases: dict[str, Backend], state: Path, limits: Limits | None = None
) -> Iterator[tuple[httpx.Client, AuthStore]]:
    """The app over ``databases`` behind an in-process httpx.Client, and its auth store."""
    auth = AuthStore.open(state)
    app = create_app(databases, auth, limits)
    with anyio.from_thread.start_blocking_portal() as portal:
        transport = PortalTransport(app, portal)
        with httpx.Client(transport=transport, base_url="http://testserver") as client:
            yield client, auth


def remote(client: httpx.Client, base: str, name: str, token: str) -> RemoteBackend:
    """A RemoteBackend on database ``name`` through ``client``."""
    return RemoteBackend(f"{base}/db/{name}", token, client=client)


def owner_token(auth: AuthStore, user: str, db: str, role: Role = Role.OWNER) -> str:
    """A new user holding ``role`` on ``db``; its token."""
    token = auth.add_user(user)
    auth.grant(user, role, db)
    return token


@contextmanager
def uvicorn_server(
    site_paths: list[Path],
    state: Path,
    env: dict[str, str] | None = None,
    port: int = 0,
    args: tuple[str, ...] = (),
    verify: ssl.SSLContext | bool = True,
) -> Iterator[str]:
    """``balsam server start`` on 127.0.0.1 and ``port`` (0: one the kernel picks); yields its
    base URL once /health answers, and stops it (SIGTERM) after."""
    log = state.parent / f"server-{os.getpid()}-{time.monotonic_ns()}.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [BALSAM, "server", "start", *map(str, site_paths), "--state", str(state),
             "--host", "127.0.0.1", "--port", str(port), *args],
            stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )  # fmt: skip
    try:
        base = _wait_ready(proc, log, verify)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=15)


def _wait_ready(
    proc: subprocess.Popen[bytes], log: Path, verify: ssl.SSLContext | bool, timeout: float = 60
) -> str:
    """The server's base URL, read from its log, once /health answers."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        found = re.search(r"serving .* on (https?://127\.0\.0\.1:\d+)", log.read_text())
        if found:
            try:
                health = httpx.get(found.group(1) + "/health", timeout=2, verify=verify)
                if health.status_code == 200:
                    return found.group(1)
            except httpx.TransportError:
                pass
        time.sleep(0.05)
    raise RuntimeError(f"server not ready after {timeout}s: {log.read_text()[-2000:]}")


def self_signed(where: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key (0600) in ``where``: (cert, key)."""
    cert, key = where / "cert.pem", where / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
         "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    key.chmod(0o600)
    return cert, key


class SitePool:
    """Fresh workflow databases behind one real uvicorn: ``count`` copies of one migrated site
    (copying a file is much quicker than migrating one), served together, one per test."""

    def __init__(self, root: Path, count: int) -> None:
        from balsam.backends.factory import init_site

        template = init_site(root / "template").path
        self.paths = []
        for i in range(count):
            copy = root / f"db{i}"
            shutil.copytree(template, copy)
            self.paths.append(copy)
        self.state = root / "state"
        auth = AuthStore.open(self.state)
        self.token = auth.add_user("pool")
        for path in self.paths:
            auth.grant("pool", Role.OWNER, path.name)
        self._next = 0

    def take(self) -> str:
        """The name of a database no test has used."""
        name = self.paths[self._next].name
        self._next += 1
        return name
