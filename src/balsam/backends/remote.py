"""RemoteBackend: the Backend protocol over HTTP to the edge service (``balsam server``).

Synchronous httpx, one pooled :class:`httpx.Client` per backend. Chosen by
:func:`balsam.backends.factory.open_backend` when ``BALSAM_URL`` (the database's URL on the
server, e.g. ``http://127.0.0.1:8000/db/NAME``) and ``BALSAM_TOKEN`` are set.

Errors keep their meaning across the wire: a connection refused or reset, a timeout and the
statuses 502, 503 and 504 raise :class:`~balsam.errors.DatabaseUnavailable` (transient: the
retry layer and the launcher repeat the call, which every Backend call allows); other statuses
raise the :class:`~balsam.errors.BalsamError` subclass the server named, with its message
(401 and 403 are :class:`~balsam.errors.AccessDenied`, permanent).

``bulk_create_jobs`` sends its jobs in one request, so the server's item limit bounds it.
"""

from __future__ import annotations

import os
import socket
import ssl
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, TypeAdapter
from pydantic import ValidationError as PydanticValidationError

from balsam.backends.login import load_login
from balsam.domain.batchjobs import BatchJobState
from balsam.domain.states import JobState
from balsam.errors import (
    AccessDenied,
    AlreadyExists,
    Ambiguous,
    BalsamError,
    ConfigError,
    DatabaseError,
    DatabaseUnavailable,
    DependencyError,
    InvalidTransition,
    NotFound,
    ValidationError,
)
from balsam.private_files import refuse_shared
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.batchjobs import BatchJobCreate, BatchJobEventOut, BatchJobOut, BatchJobUpdate
from balsam.schemas.jobs import (
    MAX_EVENT_ID,
    BulkCreated,
    EventOut,
    EventPage,
    JobCreate,
    JobOut,
    JobShape,
    StateUpdate,
    StreamEvent,
    UpdateResult,
    check_event_limit,
)
from balsam.schemas.queries import Clause, JobQuery, cursor_after, order_keys
from balsam.schemas.remote import (
    AppFilter,
    BatchJobFilter,
    Edge,
    ExpireRequest,
    Grant,
    GrantHolder,
    Identity,
    JobValues,
    KillRequest,
    LockAcquire,
    LockHolder,
    LockRenew,
    Notes,
    RecordAndClaim,
    Release,
    SessionOpen,
    StateChange,
)
from balsam.schemas.service import ServiceLockOut
from balsam.schemas.sessions import ClaimRequest, RecordedAndClaimed, SessionOut

T = TypeVar("T")

#: The error classes a server may name in a refusal (nothing else is raised from a name).
NAMED_ERRORS: dict[str, type[BalsamError]] = {
    cls.__name__: cls
    for cls in (
        NotFound,
        AlreadyExists,
        InvalidTransition,
        DependencyError,
        Ambiguous,
        ValidationError,
        DatabaseError,
        DatabaseUnavailable,
    )
}
_BY_STATUS: dict[int, type[BalsamError]] = {
    401: AccessDenied,
    403: AccessDenied,
    404: NotFound,
    409: AlreadyExists,
    413: ValidationError,
    422: ValidationError,
}
TRANSIENT_STATUSES = frozenset({502, 503, 504})
#: Jobs asked for per ``query_jobs`` request (the server's page limit is above it).
QUERY_PAGE = 5_000
#: Job fields that may be empty, which a cursor cannot page by (SQL orders NULL apart).
NULLABLE_JOB_FIELDS = frozenset(
    name
    for name, info in JobOut.model_fields.items()
    if not info.is_required() and info.default is None
)
#: Read timeout beyond a long-poll's own wait.
_SLACK = 30.0


def remote_from_env(use_login: bool = False) -> RemoteBackend | None:
    """A RemoteBackend from ``BALSAM_URL`` and ``BALSAM_TOKEN`` or ``BALSAM_TOKEN_FILE`` (and
    ``BALSAM_CA_BUNDLE``, the certificates an https server's is checked against); when none
    of them is set, from the saved ``balsam login`` if ``use_login``; else None."""
    url = os.environ.get("BALSAM_URL", "")
    token = os.environ.get("BALSAM_TOKEN", "")
    file = os.environ.get("BALSAM_TOKEN_FILE", "")
    if not (url or token or file):
        return remote_from_login() if use_login else None
    if not url or not (token or file):
        raise ConfigError(
            "set BALSAM_URL and BALSAM_TOKEN (or BALSAM_TOKEN_FILE) to use a Balsam server"
        )
    bundle = os.environ.get("BALSAM_CA_BUNDLE")
    return RemoteBackend(
        url,
        token,
        ca_bundle=Path(bundle) if bundle else None,
        token_file=Path(file) if file else None,
    )


def client_remote() -> RemoteBackend | None:
    """The server a client without a site directory reaches: ``BALSAM_URL`` first, then the
    saved ``balsam login`` when no site is active (an activated database means that one)."""
    return remote_from_env(use_login=not os.environ.get("BALSAM_DB_PATH"))


def remote_from_login() -> RemoteBackend | None:
    """A RemoteBackend on the database ``balsam login`` saved, or None without a login."""
    saved = load_login()
    if saved is None:
        return None
    return RemoteBackend(saved.url, "", ca_bundle=saved.ca_bundle, token_file=saved.token_file)


def read_token_file(path: Path) -> str:
    """The token in ``path`` (its first line); ConfigError when it is missing, empty, or
    readable by group or others."""
    try:
        mode = path.stat().st_mode & 0o777
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the token file {path}: {exc.strerror or exc}") from None
    refuse_shared(path, "token file", mode=mode)
    token = (text.strip().splitlines() or [""])[0].strip()
    if not token:
        raise ConfigError(f"token file {path} is empty")
    return token


def _verifier(ca_bundle: Path | None) -> ssl.SSLContext:
    """The TLS context that checks the server's certificate: the system's trusted roots, or
    only the certificates in ``ca_bundle`` (a self-signed server's own certificate, say)."""
    if ca_bundle is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(ca_bundle))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(f"cannot read the CA bundle {ca_bundle}: {exc}") from None


def _encode(value: Any) -> Any:
    """JSON of a model as the caller built it: fields left unset stay unset (an update sets
    only what it was given; the server fills the same defaults)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", exclude_unset=True)
    if isinstance(value, list):
        return [_encode(v) for v in value]
    return value


def _message(response: httpx.Response) -> tuple[str, str]:
    """The server's (error name, message) of a refusal."""
    try:
        body = response.json()
    except ValueError:
        return "", response.text.strip()[:300] or response.reason_phrase
    if not isinstance(body, dict):
        return "", str(body)[:300]
    detail = body.get("detail", "")
    if isinstance(detail, list):  # FastAPI's 422: a list of problems
        parts = [
            f"{'.'.join(str(x) for x in d.get('loc', []))}: {d.get('msg', '')}" for d in detail
        ]
        detail = "; ".join(parts[:3])
    return str(body.get("error", "")), str(detail)


def error_for(response: httpx.Response) -> BalsamError:
    """The BalsamError a refused response stands for."""
    name, message = _message(response)
    status = response.status_code
    if status in TRANSIENT_STATUSES:
        return DatabaseUnavailable(f"the Balsam server answered {status}: {message}")
    cls = NAMED_ERRORS.get(name) or _BY_STATUS.get(status) or DatabaseError
    if cls is AccessDenied and status == 401:
        message = f"the Balsam server refused the token: {message}"
    return cls(message or f"the Balsam server answered {status}")


class RemoteBackend:
    """A Backend whose calls are requests to ``url`` (``http[s]://HOST:PORT/db/NAME``)."""

    def __init__(
        self,
        url: str,
        token: str,
        client: httpx.Client | None = None,
        timeout: float = 60.0,
        ca_bundle: Path | None = None,
        token_file: Path | None = None,
    ) -> None:
        if not url.startswith(("http://", "https://")) or "/db/" not in url:
            raise ConfigError(f"BALSAM_URL must look like http://HOST:PORT/db/NAME (got {url!r})")
        self.url = url.rstrip("/")
        #: Read again when the server refuses the token (401), so a token replaced in the
        #: file (renewed before or after the old one expired) is picked up without a restart.
        self.token_file = token_file
        if not token and token_file is not None:
            token = read_token_file(token_file)
        self._headers = {"Authorization": f"Bearer {token}"}
        self._timeout = timeout
        self._client = client or httpx.Client(
            timeout=timeout,
            transport=httpx.HTTPTransport(
                verify=_verifier(ca_bundle),
                limits=httpx.Limits(max_connections=8, max_keepalive_connections=8),
                # Small requests go out at once, not after the server's delayed ACK.
                socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
            ),
        )

    def _send(
        self,
        method: str,
        path: str,
        body: Any = None,
        params: dict[str, Any] | None = None,
        timeout: float | None = None,
    ) -> Any:
        payload = None if body is None else _encode(body)
        response = self._request(method, path, payload, params, timeout)
        if response.status_code == 401 and self._renewed_token():
            response = self._request(method, path, payload, params, timeout)
        if response.is_success:
            try:
                return response.json()
            except ValueError:  # a proxy's page, say: nothing a repeat would change
                raise DatabaseError(
                    f"the Balsam server at {self.url} answered {response.status_code} with "
                    f"something other than JSON: {response.text.strip()[:100]!r}"
                ) from None
        raise error_for(response)

    @property
    def client(self) -> httpx.Client:
        """The pooled HTTP client (event streams take one of its connections)."""
        return self._client

    @property
    def headers(self) -> dict[str, str]:
        """The headers every request carries (the token)."""
        return dict(self._headers)

    @property
    def timeout(self) -> float:
        """Seconds a request may take (connecting, reading)."""
        return self._timeout

    def renewed_token(self) -> bool:
        """Whether the token file now holds a token other than the one refused (then used
        from now on)."""
        return self._renewed_token()

    def _renewed_token(self) -> bool:
        """Whether the token file now holds a token other than the one refused."""
        if self.token_file is None:
            return False
        token = read_token_file(self.token_file)
        if self._headers["Authorization"] == f"Bearer {token}":
            return False
        self._headers = {"Authorization": f"Bearer {token}"}
        return True

    def _request(
        self,
        method: str,
        path: str,
        payload: Any,
        params: dict[str, Any] | None,
        timeout: float | None,
    ) -> httpx.Response:
        try:
            return self._client.request(
                method,
                self.url + path,
                json=payload,
                params=params,
                headers=self._headers,
                timeout=timeout or self._timeout,
            )
        except httpx.TransportError as exc:
            if "CERTIFICATE_VERIFY_FAILED" in str(exc):  # permanent: repeating cannot help
                raise ConfigError(
                    f"the certificate of the Balsam server at {self.url} is not trusted "
                    f"(set BALSAM_CA_BUNDLE to the file of its certificate or CA): {exc}"
                ) from exc
            raise DatabaseUnavailable(
                f"cannot reach the Balsam server at {self.url}: {exc}"
            ) from exc

    def _get(self, kind: Any, method: str, path: str, body: Any = None, **kw: Any) -> Any:
        return _parse(kind, self._send(method, path, body, **kw))

    def whoami(self) -> Identity:
        """Who the token is, its role on the database and its expiry (not a Backend call:
        ``balsam login`` checks a token with it)."""
        return _parse(Identity, self._send("GET", "/whoami"))

    def grants(self) -> list[Grant]:
        """Who holds which role on the database (an owner's call; not a Backend call)."""
        return _parse(list[Grant], self._send("GET", "/grants"))

    def grant(self, user: str, role: str) -> Grant:
        """Give ``user`` ``role`` on the database (an owner's call)."""
        body = Grant.model_validate({"user": user, "role": role})
        return _parse(Grant, self._send("POST", "/grants", body))

    def revoke_grant(self, user: str) -> None:
        """Take ``user``'s role on the database away (an owner's call)."""
        self._send("POST", "/grants/remove", GrantHolder(user=user))

    # apps
    def create_app(self, spec: AppCreate) -> AppOut:
        return _parse(AppOut, self._send("POST", "/apps", spec))

    def list_apps(self, clauses: list[Clause] | None = None) -> list[AppOut]:
        return self._get(list[AppOut], "POST", "/apps/list", AppFilter(clauses=clauses))  # type: ignore[no-any-return]

    def get_app(self, name: str) -> AppOut:
        return _parse(AppOut, self._send("GET", f"/apps/{_seg(name)}"))

    def update_app(self, name: str, changes: AppUpdate) -> AppOut:
        return _parse(AppOut, self._send("PATCH", f"/apps/{_seg(name)}", changes))

    def delete_app(self, name: str) -> None:
        self._send("DELETE", f"/apps/{_seg(name)}")

    # jobs
    def create_jobs(self, specs: list[JobCreate]) -> list[JobOut]:
        return self._get(list[JobOut], "POST", "/jobs", list(specs))  # type: ignore[no-any-return]

    def bulk_create_jobs(self, specs: Iterable[JobCreate]) -> BulkCreated:
        return _parse(BulkCreated, self._send("POST", "/jobs/bulk", list(specs)))

    def query_jobs(self, query: JobQuery) -> list[JobOut]:
        if query.limit is not None and query.limit <= QUERY_PAGE:
            return self._query_page(query)
        return self._all_pages(query)

    def _query_page(self, query: JobQuery) -> list[JobOut]:
        return self._get(list[JobOut], "POST", "/jobs/query", query)  # type: ignore[no-any-return]

    def _all_pages(self, query: JobQuery) -> list[JobOut]:
        """Every job of ``query`` in pages of :data:`QUERY_PAGE` (the server answers no more
        in one call): by cursor, or by offset for an order a cursor cannot keep."""
        by_cursor = all(name not in NULLABLE_JOB_FIELDS for name, _ in order_keys(query))
        found: list[JobOut] = []
        page_query = query
        while query.limit is None or len(found) < query.limit:
            wanted = (
                QUERY_PAGE if query.limit is None else min(QUERY_PAGE, query.limit - len(found))
            )
            page = self._query_page(page_query.model_copy(update={"limit": wanted}))
            found += page
            if len(page) < wanted:
                break
            if by_cursor:
                after = cursor_after(query, page[-1])
                page_query = query.model_copy(update={"after": after, "offset": 0})
            else:
                page_query = query.model_copy(update={"offset": query.offset + len(found)})
        return found

    def count_jobs(self, query: JobQuery) -> int:
        return int(self._send("POST", "/jobs/count", query))

    def count_by_state(self, query: JobQuery) -> dict[str, int]:
        return self._get(dict[str, int], "POST", "/jobs/count-by-state", query)  # type: ignore[no-any-return]

    def job_shapes(self, query: JobQuery) -> list[JobShape]:
        return self._get(list[JobShape], "POST", "/jobs/shapes", query)  # type: ignore[no-any-return]

    def get_job(self, job_id: str) -> JobOut:
        return _parse(JobOut, self._send("GET", f"/jobs/{_seg(job_id)}"))

    def resolve_job_id(self, prefix: str) -> str:
        return str(self._send("GET", f"/job-ids/{_seg(prefix)}"))

    def update_jobs(self, query: JobQuery, values: dict[str, Any]) -> int:
        return int(self._send("POST", "/jobs/update", JobValues(query=query, values=values)))

    def set_state(self, job_id: str, state: JobState, message: str = "") -> JobOut:
        body = StateChange(state=state, message=message)
        return _parse(JobOut, self._send("POST", f"/jobs/{_seg(job_id)}/state", body))

    def delete_jobs(self, query: JobQuery) -> int:
        return int(self._send("POST", "/jobs/delete", query))

    def add_dependency(self, parent_id: str, child_id: str) -> None:
        self._send("POST", "/dependencies", Edge(parent_id=parent_id, child_id=child_id))

    def remove_dependency(self, parent_id: str, child_id: str) -> None:
        self._send("POST", "/dependencies/remove", Edge(parent_id=parent_id, child_id=child_id))

    def children_of(self, job_id: str) -> list[str]:
        return self._get(list[str], "GET", f"/jobs/{_seg(job_id)}/children")  # type: ignore[no-any-return]

    def kill_jobs(self, job_id: str, recursive: bool = False) -> list[str]:
        body = KillRequest(recursive=recursive)
        return self._get(list[str], "POST", f"/jobs/{_seg(job_id)}/kill", body)  # type: ignore[no-any-return]

    def note_jobs(self, job_ids: list[str], message: str) -> int:
        return int(self._send("POST", "/jobs/notes", Notes(job_ids=job_ids, message=message)))

    def history(self, job_id: str) -> list[EventOut]:
        return self._get(list[EventOut], "GET", f"/jobs/{_seg(job_id)}/history")  # type: ignore[no-any-return]

    def events(self, query: JobQuery) -> list[EventOut]:
        return self._get(list[EventOut], "POST", "/events/query", query)  # type: ignore[no-any-return]

    def events_since(self, after: int, limit: int = 500, workflow: str | None = None) -> EventPage:
        check_event_limit(limit)
        after = min(max(0, int(after)), MAX_EVENT_ID)
        params: dict[str, Any] = {"after": after, "limit": int(limit)}
        if workflow is not None:
            params["workflow"] = workflow
        return _parse(EventPage, self._send("GET", "/events/since", params=params))

    def stream_events(
        self, after: int | None = None, workflow: str | None = None
    ) -> Iterator[StreamEvent]:
        """Follow job events over Server-Sent Events, from after ``after`` (None: from now),
        reconnecting after a lost connection (see :class:`balsam.backends.stream.EventStream`)."""
        from balsam.backends.stream import EventStream

        return iter(EventStream(self, after=after, workflow=workflow))

    # launcher sessions
    def open_session(
        self,
        label: str,
        hostname: str,
        pid: int,
        client_key: str | None = None,
        batch_job: str | None = None,
    ) -> SessionOut:
        body = SessionOpen(
            label=label, hostname=hostname, pid=pid, client_key=client_key, batch_job=batch_job
        )
        return _parse(SessionOut, self._send("POST", "/sessions", body))

    def heartbeat(self, session_id: int) -> list[str]:
        return self._get(list[str], "POST", f"/sessions/{int(session_id)}/heartbeat")  # type: ignore[no-any-return]

    def close_session(self, session_id: int) -> None:
        self._send("POST", f"/sessions/{int(session_id)}/close")

    def ended_held_jobs(self, session_id: int) -> list[str]:
        path = f"/sessions/{int(session_id)}/ended-held-jobs"
        return self._get(list[str], "GET", path)  # type: ignore[no-any-return]

    def list_sessions(self) -> list[SessionOut]:
        return self._get(list[SessionOut], "GET", "/sessions")  # type: ignore[no-any-return]

    def expire_sessions(self, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
        body = ExpireRequest(lease_seconds=lease_seconds, dead=dead)
        return self._get(list[int], "POST", "/sessions/expire", body)  # type: ignore[no-any-return]

    def claim_jobs(self, session_id: int, request: ClaimRequest) -> list[JobOut]:
        path = f"/sessions/{int(session_id)}/claim"
        return self._get(list[JobOut], "POST", path, request)  # type: ignore[no-any-return]

    def record_updates(self, session_id: int, updates: list[StateUpdate]) -> list[UpdateResult]:
        path = f"/sessions/{int(session_id)}/updates"
        return self._get(list[UpdateResult], "POST", path, list(updates))  # type: ignore[no-any-return]

    def record_and_claim(
        self, session_id: int, updates: list[StateUpdate], request: ClaimRequest
    ) -> RecordedAndClaimed:
        body = RecordAndClaim(updates=updates, request=request)
        path = f"/sessions/{int(session_id)}/record-and-claim"
        return _parse(RecordedAndClaimed, self._send("POST", path, body))

    def release_jobs(self, session_id: int, job_ids: list[str], seq: int = 0) -> None:
        body = Release(job_ids=job_ids, seq=seq)
        self._send("POST", f"/sessions/{int(session_id)}/release", body)

    # launcher batch jobs
    def create_batch_job(self, spec: BatchJobCreate) -> BatchJobOut:
        return _parse(BatchJobOut, self._send("POST", "/batch-jobs", spec))

    def update_batch_job(self, batch_id: int, changes: BatchJobUpdate) -> BatchJobOut:
        path = f"/batch-jobs/{int(batch_id)}"
        return _parse(BatchJobOut, self._send("PATCH", path, changes))

    def get_batch_job(self, batch_id: int) -> BatchJobOut:
        return _parse(BatchJobOut, self._send("GET", f"/batch-jobs/{int(batch_id)}"))

    def list_batch_jobs(self, states: list[BatchJobState] | None = None) -> list[BatchJobOut]:
        body = BatchJobFilter(states=states)
        return self._get(list[BatchJobOut], "POST", "/batch-jobs/list", body)  # type: ignore[no-any-return]

    def batch_job_history(self, batch_id: int) -> list[BatchJobEventOut]:
        path = f"/batch-jobs/{int(batch_id)}/history"
        return self._get(list[BatchJobEventOut], "GET", path)  # type: ignore[no-any-return]

    # service locks
    def acquire_service_lock(
        self,
        name: str,
        holder: str,
        *,
        hostname: str,
        pid: int,
        lease_seconds: float,
        take_from: str | None = None,
    ) -> ServiceLockOut:
        body = LockAcquire(
            holder=holder,
            hostname=hostname,
            pid=pid,
            lease_seconds=lease_seconds,
            take_from=take_from,
        )
        path = f"/service-locks/{_seg(name)}/acquire"
        return _parse(ServiceLockOut, self._send("POST", path, body))

    def renew_service_lock(
        self, name: str, holder: str, *, lease_seconds: float, status: str
    ) -> ServiceLockOut:
        body = LockRenew(holder=holder, lease_seconds=lease_seconds, status=status)
        path = f"/service-locks/{_seg(name)}/renew"
        return _parse(ServiceLockOut, self._send("POST", path, body))

    def release_service_lock(self, name: str, holder: str) -> None:
        self._send("POST", f"/service-locks/{_seg(name)}/release", LockHolder(holder=holder))

    def get_service_lock(self, name: str) -> ServiceLockOut | None:
        return self._get(ServiceLockOut | None, "GET", f"/service-locks/{_seg(name)}")  # type: ignore[no-any-return]

    def request_service_stop(self, name: str) -> ServiceLockOut | None:
        path = f"/service-locks/{_seg(name)}/stop"
        return self._get(ServiceLockOut | None, "POST", path)  # type: ignore[no-any-return]

    # the change signal
    def change_marker(self) -> int:
        return int(self._send("GET", "/changes/marker"))

    def wait_for_change(self, after: int, timeout: float) -> int:
        """Long-polls; the server cuts a long ``timeout`` to its cap (the marker is then
        returned unchanged, as after any timeout), so the wait may end sooner than asked."""
        params = {"after": int(after), "timeout": max(0.0, float(timeout))}
        return int(self._send("GET", "/changes/wait", params=params, timeout=timeout + _SLACK))

    def close(self) -> None:
        self._client.close()


def _parse(kind: type[T], data: Any) -> T:
    """``data`` as ``kind``; a DatabaseError when the server's answer does not fit (a server
    of another Balsam version, say), never a pydantic traceback."""
    try:
        return TypeAdapter(kind).validate_python(data)
    except PydanticValidationError as exc:
        raise DatabaseError(
            f"the Balsam server's answer does not fit this Balsam (another version?): "
            f"{exc.errors()[0].get('msg', exc)}"
        ) from None


def _seg(value: str) -> str:
    """``value`` as one path segment (a ``/`` or ``..`` cannot change the route)."""
    from urllib.parse import quote

    text = quote(str(value), safe="")
    return text.replace(".", "%2E") if text in ("", ".", "..") else text


def served_url(backend: object) -> str | None:
    """The database URL ``backend`` (or the RemoteBackend a retry layer wraps) calls; None
    for a Backend on a local database."""
    inner = getattr(backend, "inner", backend)
    return inner.url if isinstance(inner, RemoteBackend) else None
