"""``globus://ENDPOINT_UUID/PATH`` through globus-sdk (``pip install balsam[transfer]``).

Items of many jobs are batched, as Balsam 0.7's transfer service did: every item asked for
within ``transfer.batch_window_seconds`` of the first goes, per (source endpoint, destination
endpoint) pair, into one Transfer task; the task is polled every ``globus_poll_seconds`` until
it ends (SUCCEEDED or FAILED) or ``globus_task_timeout_seconds`` pass, and every job waiting on
it gets its result. A FAILED task fails its jobs with the task's reason; a Transfer API that
cannot be reached (connection errors, 5xx) is transient, so each job's try is retried. This
site's side of every transfer is ``transfer.globus_endpoint_id`` (the collection that sees the
workflow database's files under the same paths).

One :class:`GlobusBatcher` serves all stager threads of a launcher (its owner closes it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urlsplit

from balsam.platform.transfer.errors import TransferError, TransientTransferError
from balsam.platform.transfer.local import matching
from balsam.transfer_settings import TransferSettings

if TYPE_CHECKING:
    import globus_sdk

log = logging.getLogger(__name__)
#: (source endpoint, destination endpoint)
Pair = tuple[str, str]
#: One item: source path, destination path, recursive.
Item = tuple[str, str, bool]


def parse_globus_url(url: str) -> tuple[str, str]:
    """``(endpoint id, absolute path)`` of ``globus://ENDPOINT/PATH``."""
    parts = urlsplit(url)
    if not parts.netloc:
        raise TransferError(f"{url} names no endpoint (expected globus://ENDPOINT_UUID/PATH)")
    return parts.netloc, unquote(parts.path) or "/"


@dataclass
class _Batch:
    """Items waiting for one task, and the futures of the jobs that asked."""

    items: list[Item] = field(default_factory=list)
    waiters: list[Future[None]] = field(default_factory=list)


class GlobusBatcher:
    """Collects items from many threads into one Transfer task per endpoint pair."""

    def __init__(
        self,
        settings: TransferSettings,
        client: Callable[[], globus_sdk.TransferClient],
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings
        self._client_factory = client
        self._client: globus_sdk.TransferClient | None = None
        self._sleep = sleep
        self._lock = threading.Lock()
        self._pending: dict[Pair, _Batch] = {}
        self._thread: threading.Thread | None = None
        self._closed = False

    def transfer(self, pair: Pair, items: list[Item]) -> None:
        """Move ``items`` between the pair's endpoints, in a task shared with other callers;
        returns when the task has succeeded (TransferError with its reason otherwise)."""
        done: Future[None] = Future()
        with self._lock:
            if self._closed:
                raise TransientTransferError("the Globus batcher is closed (launcher stopping)")
            batch = self._pending.setdefault(pair, _Batch())
            batch.items += items
            batch.waiters.append(done)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="balsam-globus", daemon=True)
                self._thread.start()
        done.result()

    def close(self) -> None:
        """Take no more items; callers still waiting are told to try again later."""
        with self._lock:
            self._closed = True
            pending, self._pending = self._pending, {}
        for batch in pending.values():
            _settle(batch.waiters, TransientTransferError("the launcher stopped"))

    def _run(self) -> None:
        """Wait for the window, then submit and follow every pair's task."""
        self._sleep(self.settings.batch_window_seconds)
        with self._lock:
            batches, self._pending = self._pending, {}
            self._thread = None
        threads = [
            threading.Thread(target=self._task, args=(pair, batch), daemon=True)
            for pair, batch in batches.items()
        ]
        for thread in threads:
            thread.start()

    def _task(self, pair: Pair, batch: _Batch) -> None:
        try:
            task_id = self._submit(pair, batch.items)
            self._follow(task_id)
        except Exception as exc:  # every waiter gets the reason
            _settle(batch.waiters, exc)
        else:
            _settle(batch.waiters, None)

    def _client_now(self) -> globus_sdk.TransferClient:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _submit(self, pair: Pair, items: list[Item]) -> str:
        import globus_sdk

        data = globus_sdk.TransferData(
            pair[0], pair[1], label="balsam stage", sync_level="checksum", verify_checksum=True
        )
        for src, dst, recursive in items:
            data.add_item(src, dst, recursive=recursive)
        response = _call(lambda: self._client_now().submit_transfer(data), "submit")
        task_id = str(response["task_id"])
        log.info("Globus task %s: %d item(s) %s -> %s", task_id, len(items), *pair)
        return task_id

    def _follow(self, task_id: str) -> None:
        """Poll the task until it ends; TransferError when it failed or took too long."""
        deadline = time.monotonic() + self.settings.globus_task_timeout_seconds
        while True:
            task = _call(lambda: self._client_now().get_task(task_id), "poll")
            status = task["status"]
            if status == "SUCCEEDED":
                return
            if status == "FAILED":
                reason = task.get("nice_status_details") or task.get("nice_status") or ""
                raise TransferError(f"Globus task {task_id} failed: {reason or 'no reason'}")
            if time.monotonic() > deadline:
                raise TransferError(
                    f"Globus task {task_id} did not end within "
                    f"{self.settings.globus_task_timeout_seconds:g} s (last status {status})"
                )
            self._sleep(self.settings.globus_poll_seconds)


def _call(request: Callable[[], Any], what: str) -> Any:
    """One Transfer API call, its errors in Balsam's terms (5xx and network: transient)."""
    import globus_sdk

    try:
        return request()
    except globus_sdk.GlobusAPIError as exc:
        message = f"Globus {what} refused: HTTP {exc.http_status} {exc.code}: {exc.message}"
        if exc.http_status >= 500 or exc.http_status == 429:
            raise TransientTransferError(message) from exc
        raise TransferError(message) from exc
    except globus_sdk.NetworkError as exc:
        raise TransientTransferError(f"Globus {what} failed: {exc}") from exc


def _settle(waiters: list[Future[None]], error: BaseException | None) -> None:
    for waiter in waiters:
        if waiter.done():
            continue
        if error is None:
            waiter.set_result(None)
        else:
            waiter.set_exception(error)


class GlobusAdapter:
    """globus:// stage-in and stage-out through a shared :class:`GlobusBatcher`."""

    def __init__(self, settings: TransferSettings, batcher: GlobusBatcher) -> None:
        self.settings = settings
        self.batcher = batcher

    def _here(self) -> str:
        if not self.settings.globus_endpoint_id:
            raise TransferError(
                "globus:// needs this site's endpoint: set transfer.globus_endpoint_id"
            )
        return self.settings.globus_endpoint_id

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """Transfer the remote file or directory into ``dst_dir`` (under its own name)."""
        endpoint, path = parse_globus_url(url)
        name = Path(path.rstrip("/")).name or "root"
        dst_dir.mkdir(parents=True, exist_ok=True)
        target = dst_dir / name
        item = (path, str(target), path.endswith("/"))
        self.batcher.transfer((endpoint, self._here()), [item])
        return [target]

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """Transfer the entries matching ``patterns`` into the remote directory ``url``."""
        endpoint, path = parse_globus_url(url)
        matched = matching(src_dir, patterns)
        items = [(str(p), f"{path.rstrip('/')}/{p.name}", p.is_dir()) for p in matched]
        if items:
            self.batcher.transfer((self._here(), endpoint), items)
        return matched
