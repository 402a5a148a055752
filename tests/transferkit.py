"""Real servers on loopback for the transfer tests: an rsync daemon, an sshd, an HTTP server.

Each fixture starts its server and waits until it accepts connections; a server that does not
start fails the test (never skips it).
"""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import socket
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from waiting import wait_until


def free_port() -> int:
    """A TCP port nothing listens on now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


@dataclass
class RsyncDaemon:
    """An rsync daemon serving the writable module ``data`` from ``root``."""

    port: int
    root: Path

    def url(self, path: str = "") -> str:
        """``rsync://127.0.0.1:PORT/data/PATH``."""
        return f"rsync://127.0.0.1:{self.port}/data/{path}"


@pytest.fixture
def rsync_daemon(tmp_path: Path) -> Iterator[RsyncDaemon]:
    """A real ``rsync --daemon`` on a loopback port."""
    if shutil.which("rsync") is None:
        pytest.fail("rsync is not installed (scripts/setup.sh --tests installs it)")
    home = tmp_path / "rsyncd"
    root = home / "module"
    root.mkdir(parents=True)
    port = free_port()
    config = home / "rsyncd.conf"
    config.write_text(
        f"use chroot = no\npid file = {home}/rsyncd.pid\nlock file = {home}/rsyncd.lock\n"
        f"log file = {home}/rsyncd.log\naddress = 127.0.0.1\n"
        f"[data]\n  path = {root}\n  read only = no\n  uid = {os.getuid()}\n"
        f"  gid = {os.getgid()}\n"
    )
    log = (home / "stdout.log").open("wb")
    proc = subprocess.Popen(
        ["rsync", "--daemon", "--no-detach", f"--config={config}", f"--port={port}"],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_until(lambda: _accepts(port) or proc.poll() is not None, timeout=15)
        assert proc.poll() is None, (home / "stdout.log").read_text()
        yield RsyncDaemon(port, root)
    finally:
        _stop(proc)
        log.close()


@dataclass
class Sshd:
    """A real sshd on a loopback port that lets this user in with a generated key."""

    port: int
    ssh_options: list[str]


@pytest.fixture
def sshd(tmp_path: Path) -> Iterator[Sshd]:
    """``/usr/sbin/sshd`` on a loopback port, a generated host key and an authorized key."""
    if not Path("/usr/sbin/sshd").exists():
        pytest.fail("sshd is not installed (scripts/setup.sh --tests installs openssh-server)")
    home = tmp_path / "sshd"
    home.mkdir()
    for name in ("host_key", "client_key"):
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(home / name)], check=True
        )
    shutil.copy(home / "client_key.pub", home / "authorized_keys")
    port = free_port()
    host_pub = (home / "host_key.pub").read_text().split()
    (home / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_pub[0]} {host_pub[1]}\n")
    config = home / "sshd_config"
    config.write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {home}/host_key\n"
        f"AuthorizedKeysFile {home}/authorized_keys\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPermitRootLogin prohibit-password\nStrictModes no\n"
        f"UsePAM no\nPidFile {home}/sshd.pid\n"
    )
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory
    log = (home / "sshd.log").open("wb")
    proc = subprocess.Popen(
        ["/usr/sbin/sshd", "-D", "-e", "-f", str(config)],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    options = [
        "-F", "/dev/null", "-p", str(port), "-i", str(home / "client_key"),
        "-o", "IdentitiesOnly=yes", "-o", f"UserKnownHostsFile={home}/known_hosts",
    ]  # fmt: skip
    try:
        wait_until(lambda: _accepts(port) or proc.poll() is not None, timeout=15)
        assert proc.poll() is None, (home / "sshd.log").read_text()
        yield Sshd(port, options)
    finally:
        _stop(proc)
        log.close()


@dataclass
class FileServer:
    """A threaded HTTP server of the files under ``root``, with Range support.

    ``fail_first[path] = N``: the first N GETs of it answer 503. ``drop_after[path] = B``: the
    first GET of it sends its headers and B bytes of the body, then closes the connection.
    ``digest[path] = True``: answers carry ``Repr-Digest: sha-256=:...:`` (of ``lie`` bytes
    when ``lie[path]`` is set). ``requests``: (path, Range header) of every GET.
    """

    root: Path
    port: int = 0
    fail_first: dict[str, int] = field(default_factory=dict)
    drop_after: dict[str, int] = field(default_factory=dict)
    digest: dict[str, bool] = field(default_factory=dict)
    lie: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str | None]] = field(default_factory=list)

    def url(self, path: str) -> str:
        """``http://127.0.0.1:PORT/PATH``."""
        return f"http://127.0.0.1:{self.port}/{path}"


def _handler(server: FileServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            path = self.path.lstrip("/")
            server.requests.append((path, self.headers.get("Range")))
            if server.fail_first.get(path, 0) > 0:
                server.fail_first[path] -= 1
                self._empty(503)
                return
            file = server.root / path
            if not file.is_file():
                self._empty(404)
                return
            data = file.read_bytes()
            start = 0
            ranged = self.headers.get("Range")
            if ranged and ranged.startswith("bytes="):
                start = int(ranged.removeprefix("bytes=").split("-")[0])
            body = data[start:]
            self.send_response(206 if start else 200)
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.send_header("Content-Length", str(len(body)))
            self.send_header("ETag", f'"{hashlib.md5(data).hexdigest()}"')
            self.send_header("Accept-Ranges", "bytes")
            if server.digest.get(path):
                whole = server.lie.get(path, data)
                b64 = base64.b64encode(hashlib.sha256(whole).digest()).decode()
                self.send_header("Repr-Digest", f"sha-256=:{b64}:")
            self.end_headers()
            cut = server.drop_after.pop(path, None)
            if cut is not None:
                self.wfile.write(body[:cut])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(body)

        def _empty(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return Handler


@pytest.fixture
def file_server(tmp_path: Path) -> Iterator[FileServer]:
    """A real HTTP server on a loopback port serving ``tmp_path / "www"``."""
    root = tmp_path / "www"
    root.mkdir()
    server = FileServer(root)
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(server))
    server.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        httpd.shutdown()
        httpd.server_close()
