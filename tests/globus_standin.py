"""A local stand-in of the Globus Transfer API (and Auth's token endpoint) that checks requests.

It serves what Balsam's Globus adapter uses: ``GET /v0.10/submission_id``,
``POST /v0.10/transfer``, ``GET /v0.10/task/ID``, and Auth's ``POST /v2/oauth2/token`` (a
refresh, a login's code exchange). Every request must carry the expected bearer token (Auth:
the client id in the form); a transfer document must be a well-formed ``transfer`` with a
submission id this server handed out, both endpoints, and ``transfer_item`` DATA with
absolute paths. What is wrong is answered 400/401 the way Globus answers and also kept in
``problems`` (the tests assert it is empty). The endpoints are all this machine: a task
copies its items' files when first polled, and FAILS (``FILE_NOT_FOUND``) when a source is
missing. It is not Globus: it knows the request shapes the SDK sends, not Globus's behaviour
beyond them.
"""

from __future__ import annotations

import json
import shutil
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import pytest

TRANSFER_KEYS = {"DATA_TYPE", "submission_id", "source_endpoint", "destination_endpoint", "DATA"}


@dataclass
class GlobusStandIn:
    """State of the stand-in: tokens it accepts, tasks it holds, problems it saw."""

    port: int = 0
    token: str = "access-1"
    refresh_token: str = "refresh-1"
    client_id: str = ""
    submission_ids: set[str] = field(default_factory=set)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    refreshes: int = 0
    login_code: str = "code-from-the-browser"

    @property
    def url(self) -> str:
        """The base URL (for GLOBUS_SDK_SERVICE_URL_TRANSFER and _AUTH)."""
        return f"http://127.0.0.1:{self.port}/"

    def check_transfer(self, body: dict[str, Any]) -> str | None:
        """What is wrong with a transfer document, or None."""
        missing = TRANSFER_KEYS - set(body)
        if missing:
            return f"missing {sorted(missing)}"
        if body["DATA_TYPE"] != "transfer":
            return f"DATA_TYPE {body['DATA_TYPE']!r}"
        if body["submission_id"] not in self.submission_ids:
            return "unknown submission_id"
        for ep in ("source_endpoint", "destination_endpoint"):
            uuid.UUID(body[ep])
        for item in body["DATA"]:
            if item.get("DATA_TYPE") != "transfer_item":
                return f"item DATA_TYPE {item.get('DATA_TYPE')!r}"
            for key in ("source_path", "destination_path"):
                if not str(item.get(key, "")).startswith("/"):
                    return f"item {key} {item.get(key)!r} is not absolute"
        return None

    def run_task(self, task: dict[str, Any]) -> None:
        """Do the copy (all endpoints are this machine) and settle the status."""
        for item in task["DATA"]:
            src, dst = Path(item["source_path"]), Path(item["destination_path"])
            if not src.exists():
                task.update(
                    status="FAILED",
                    nice_status="FILE_NOT_FOUND",
                    nice_status_details=f"{src}: No such file or directory",
                )
                return
            dst.parent.mkdir(parents=True, exist_ok=True)
            if src.is_dir():
                shutil.copytree(src, dst, dirs_exist_ok=True)
            else:
                shutil.copy2(src, dst)
        task["status"] = "SUCCEEDED"


def _handler(state: GlobusStandIn) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: object) -> None:
            pass

        def _send(self, status: int, body: dict[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _refuse(self, status: int, code: str, why: str) -> None:
            state.problems.append(f"{self.command} {self.path}: {why}")
            self._send(status, {"code": code, "message": why, "request_id": "standin"})

        def _authorized(self) -> bool:
            if self.headers.get("Authorization") != f"Bearer {state.token}":
                self._refuse(401, "AuthenticationFailed", "bad or missing bearer token")
                return False
            return True

        def _body(self) -> bytes:
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def do_GET(self) -> None:
            if not self._authorized():
                return
            if self.path == "/v0.10/submission_id":
                sid = str(uuid.uuid4())
                state.submission_ids.add(sid)
                self._send(200, {"DATA_TYPE": "submission_id", "value": sid})
            elif self.path.startswith("/v0.10/task/"):
                task = state.tasks.get(self.path.rsplit("/", 1)[1])
                if task is None:
                    self._refuse(404, "TaskNotFound", "no such task")
                    return
                if task["status"] == "ACTIVE" and task["polls"] > 0:
                    state.run_task(task)
                task["polls"] += 1
                shown = {k: v for k, v in task.items() if k not in ("DATA", "polls")}
                self._send(200, {"DATA_TYPE": "task", **shown})
            else:
                self._refuse(404, "NotFound", f"the stand-in does not serve {self.path}")

        def do_POST(self) -> None:
            if self.path == "/v2/oauth2/token":
                self._token(parse_qs(self._body().decode()))
                return
            if not self._authorized():
                return
            if self.path != "/v0.10/transfer":
                self._refuse(404, "NotFound", f"the stand-in does not serve {self.path}")
                return
            body = json.loads(self._body())
            problem = state.check_transfer(body)
            if problem:
                self._refuse(400, "BadRequest", problem)
                return
            task_id = str(uuid.uuid4())
            state.tasks[task_id] = {"task_id": task_id, "status": "ACTIVE", "polls": 0, **body}
            self._send(
                202,
                {
                    "DATA_TYPE": "transfer_result",
                    "code": "Accepted",
                    "task_id": task_id,
                    "submission_id": body["submission_id"],
                },
            )

        def _token(self, form: dict[str, list[str]]) -> None:
            if form.get("grant_type") == ["authorization_code"]:
                self._code(form)
                return
            if form.get("grant_type") != ["refresh_token"] or form.get("refresh_token") != [
                state.refresh_token
            ]:
                self._refuse(400, "invalid_grant", f"bad refresh request {sorted(form)}")
                return
            if form.get("client_id") != [state.client_id]:
                self._refuse(401, "invalid_client", "wrong client_id")
                return
            state.refreshes += 1
            state.token = f"access-{state.refreshes + 1}"
            self._send(
                200,
                {
                    "access_token": state.token,
                    "expires_in": 3600,
                    "resource_server": "transfer.api.globus.org",
                    "token_type": "Bearer",
                    "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
                    "other_tokens": [],
                },
            )

        def _code(self, form: dict[str, list[str]]) -> None:
            """The native-app login's code exchange (PKCE: a verifier must come with it)."""
            if form.get("code") != [state.login_code] or not form.get("code_verifier"):
                self._refuse(400, "invalid_grant", f"bad code exchange {sorted(form)}")
                return
            if form.get("client_id") != [state.client_id]:
                self._refuse(401, "invalid_client", "wrong client_id")
                return
            self._send(
                200,
                {
                    "access_token": state.token,
                    "refresh_token": state.refresh_token,
                    "expires_in": 3600,
                    "resource_server": "transfer.api.globus.org",
                    "token_type": "Bearer",
                    "other_tokens": [],
                    "scope": "urn:globus:auth:scope:transfer.api.globus.org:all",
                },
            )

    return Handler


@pytest.fixture
def globus_standin(monkeypatch: pytest.MonkeyPatch) -> Iterator[GlobusStandIn]:
    """The stand-in on a loopback port; globus-sdk pointed at it through its environment."""
    state = GlobusStandIn(client_id=str(uuid.uuid4()))
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _handler(state))
    state.port = httpd.server_address[1]
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_TRANSFER", state.url)
    monkeypatch.setenv("GLOBUS_SDK_SERVICE_URL_AUTH", state.url)
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
