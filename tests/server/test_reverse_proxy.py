"""The production setup of docs/server.md: a real nginx terminating TLS (a self-signed
certificate here) in front of a real uvicorn on loopback, with the nginx block of that page
as written (only its port and certificate paths changed). RemoteBackend calls go through it:
a bulk creation over nginx's default body limit, listings, a long poll of the server's full
25 s cap that nginx must not cut, and one that a change ends at once (not held in a buffer).

nginx is required, not optional: scripts/setup.sh --tests installs it (nginx-light). It runs
in the foreground from a directory of its own (config, pid, logs, temp files).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

import httpx
import pytest

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend, remote_from_env
from balsam.schemas.apps import AppCreate
from balsam.schemas.jobs import JobCreate
from balsam.schemas.queries import JobQuery, clause_from_kwargs
from balsam.server.auth import AuthStore, Role
from serverkit import self_signed, uvicorn_server

DOCS = Path(__file__).parents[2] / "docs" / "server.md"
#: The server's long-poll cap (deps.Limits.max_wait_seconds), which nginx must outlast.
CAP = 25.0


def _nginx() -> str:
    found = shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin:/sbin")
    if found is None:
        pytest.fail("nginx is not installed: run scripts/setup.sh --tests (apt nginx-light)")
    return found


def _documented_block() -> str:
    """The ```nginx block of docs/server.md."""
    (block,) = re.findall(r"```nginx\n(.*?)```", DOCS.read_text(), re.S)
    return block


def _free_port() -> int:
    with closing(socket.socket()) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _config(root: Path, upstream: int, port: int, cert: Path, key: Path) -> Path:
    """nginx.conf in ``root``: the documented block, on ``port``, proxying to ``upstream``."""
    block = _documented_block()
    for old, new in (
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream};"),
        ("listen 443 ssl;", f"listen 127.0.0.1:{port} ssl;"),
        ("/etc/letsencrypt/live/balsam.example.org/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/balsam.example.org/privkey.pem", str(key)),
    ):
        assert old in block, f"docs/server.md's nginx block lost {old!r}"
        block = block.replace(old, new)
    temp = " ".join(
        f"{kind}_temp_path {root / kind};" for kind in ("client_body", "proxy", "fastcgi")
    )
    conf = root / "nginx.conf"
    conf.write_text(
        # Workers as root: the test's directories are root's own (0700) when it runs as root.
        ("user root;\n" if _is_root() else "")
        + f"pid {root / 'nginx.pid'};\nerror_log {root / 'error.log'} info;\n"
        + "events { worker_connections 256; }\n"
        + f"http {{\naccess_log {root / 'access.log'};\n{temp}\n"
        + f"uwsgi_temp_path {root / 'uwsgi'}; scgi_temp_path {root / 'scgi'};\n"
        + block
        + "}\n"
    )
    return conf


def _is_root() -> bool:
    return os.geteuid() == 0


@contextmanager
def nginx(root: Path, upstream: int, cert: Path, key: Path) -> Iterator[str]:
    """A foreground nginx in front of 127.0.0.1:``upstream``; yields its https base URL."""
    binary = _nginx()
    root.mkdir()
    port = _free_port()
    conf = _config(root, upstream, port, cert, key)
    checked = subprocess.run([binary, "-t", "-p", str(root), "-c", str(conf)],
                             capture_output=True, text=True, timeout=30)  # fmt: skip
    assert checked.returncode == 0, checked.stderr
    with (root / "stderr").open("w") as err:
        proc = subprocess.Popen(
            [binary, "-p", str(root), "-c", str(conf), "-g", "daemon off;"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
        )  # fmt: skip
    base = f"https://127.0.0.1:{port}"
    trust = ssl.create_default_context(cafile=str(cert))
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, f"nginx exited: {(root / 'stderr').read_text()}"
            try:
                if httpx.get(f"{base}/health", verify=trust, timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, (root / "error.log").read_text()[-2000:]
            time.sleep(0.05)
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=15)


def test_remote_calls_through_nginx(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    site = init_site(tmp_path / "teamsite")
    cert, key = self_signed(tmp_path)
    state = tmp_path / "state"
    auth = AuthStore.open(state)
    token = auth.add_user("alice")
    auth.grant("alice", Role.OWNER, "teamsite")
    with uvicorn_server([site.path], state) as upstream:
        upstream_port = int(upstream.rsplit(":", 1)[1])
        with nginx(tmp_path / "nginx", upstream_port, cert, key) as base:
            monkeypatch.setenv("BALSAM_URL", f"{base}/db/teamsite")
            monkeypatch.setenv("BALSAM_TOKEN", token)
            monkeypatch.setenv("BALSAM_CA_BUNDLE", str(cert))
            be = remote_from_env()
            assert isinstance(be, RemoteBackend)
            with closing(be):
                _calls(be)
            logged = (tmp_path / "nginx" / "access.log").read_text()
            assert "POST /db/teamsite/jobs/bulk" in logged, "the calls did not pass nginx"


def _calls(be: RemoteBackend) -> None:
    be.create_app(AppCreate(name="hello", executable="echo"))
    # ~2 MiB in one request: over nginx's default client_max_body_size (1 MiB).
    specs = [
        JobCreate(workflow="w", application="hello", name=f"j{i}", args="x" * 400)
        for i in range(5000)
    ]
    assert len(be.bulk_create_jobs(specs).job_ids) == 5000
    assert be.count_jobs(JobQuery()) == 5000
    named = JobQuery(clauses=[clause_from_kwargs({"name": "j4242"})])
    assert [j.args for j in be.query_jobs(named)] == ["x" * 400]

    marker = be.change_marker()
    started = time.monotonic()
    assert be.wait_for_change(marker, timeout=CAP + 10) == marker  # cut by the server, not nginx
    waited = time.monotonic() - started
    assert CAP - 1 <= waited < CAP + 5, waited

    # A change ends a waiting long poll at once through nginx.
    woke: list[float] = []

    def wait() -> None:
        began = time.monotonic()
        be.wait_for_change(marker, timeout=CAP)
        woke.append(time.monotonic() - began)

    waiter = threading.Thread(target=wait)
    waiter.start()
    # Not a condition to wait on: nothing shows that the poll reached the server. A change
    # made before it does ends the poll at once as well, so this only keeps the check sharp.
    time.sleep(0.5)
    be.create_jobs([JobCreate(workflow="w", application="hello", name="late")])
    waiter.join(timeout=CAP + 5)
    assert woke and woke[0] < CAP / 2, woke
