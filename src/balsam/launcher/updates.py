"""Buffered state changes: many jobs' updates written in one call per flush.

The launcher adds an update whenever a job reaches a new state and flushes the buffer every
``flush_interval_seconds`` (sooner when a task waits for the answer, and before claiming or
exiting). Every update carries the next number of the session's call counter, so a flush whose
answer was lost is simply sent again, unchanged: the database reports what it applied before as
duplicates (:class:`balsam.schemas.jobs.UpdateResult`). A flush that fails transiently keeps its
updates, in order, ahead of newer ones, and is retried with backoff; releases of jobs the
launcher lets go of without a state change ride along the same way.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from balsam.backends.base import Backend
from balsam.domain.states import JobState
from balsam.errors import BalsamError, NotFound
from balsam.launcher.backoff import Backoff
from balsam.schemas.jobs import JobOut, StateUpdate, UpdateResult
from balsam.schemas.sessions import ClaimRequest

log = logging.getLogger(__name__)


@dataclass
class FlushResult:
    """What one flush did."""

    #: One result per update sent, in order (empty when nothing was sent or it failed).
    results: list[UpdateResult] = field(default_factory=list)
    #: Recording the updates failed; they are kept for the next try. (When only the
    #: releases failed, the results are given and the releases kept and retried.)
    failed: bool = False
    #: The session is gone (expired by peers): the launcher must start afresh.
    lost: bool = False
    #: The database refused the call for good (not transient): the launcher must stop.
    broken: str = ""
    #: A claim went along with the updates (:meth:`UpdateBuffer.flush`'s ``claim``).
    claim_sent: bool = False
    #: What that claim took (None when it got no answer).
    claimed: list[JobOut] | None = None
    #: Why the call got no answer (with ``failed``).
    error: BalsamError | None = None


class UpdateBuffer:
    """State updates and releases waiting to be written by one launcher session."""

    def __init__(
        self,
        backend: Backend,
        interval: float,
        next_seq: Callable[[], int],
    ) -> None:
        self.backend = backend
        self.session_id = 0
        self.interval = interval
        self.next_seq = next_seq
        self.pending: list[StateUpdate] = []
        self.releases: list[str] = []
        #: Releases being sent: their call number is fixed at the first try, so a repeat
        #: cannot release a job this session claimed again after the first one went through.
        self.sending: tuple[int, list[str]] | None = None
        self._due: float | None = None
        self.backoff = Backoff()

    def __len__(self) -> int:
        return len(self.pending) + len(self.releases) + len(self.sending[1] if self.sending else [])

    def add(self, update: StateUpdate, now: float) -> int:
        """Queue ``update`` (its ``seq`` and time are filled in here); returns its seq."""
        update.seq = self.next_seq()
        update.timestamp = datetime.now(UTC)
        self.pending.append(update)
        if self._due is None:
            self._due = now + self.interval
        return update.seq

    def record(
        self,
        job_id: str,
        state: JobState,
        from_state: JobState | None,
        now: float,
        message: str = "",
        return_code: int | None = None,
        release: bool = False,
        lost: bool = False,
        outcome: dict[str, Any] | None = None,
    ) -> int:
        """Queue one job's move from ``from_state`` to ``state`` (with a function job's
        ``outcome``, which travels in the same update); returns its seq."""
        # Built by the launcher itself from valid values: skip validation on this hot path.
        update = StateUpdate.model_construct(
            job_id=job_id,
            state=state,
            message=message,
            return_code=return_code,
            timestamp=None,
            release=release,
            lost=lost,
            seq=0,
            from_state=from_state,
            outcome=outcome,
        )
        return self.add(update, now)

    def release(self, job_ids: list[str], now: float) -> None:
        """Let go of ``job_ids`` at the next flush, their states unchanged."""
        if job_ids:
            self.releases += job_ids
            if self._due is None:
                self._due = now + self.interval

    def keep(self, job_ids: list[str]) -> None:
        """The launcher holds ``job_ids`` again (claimed anew): a release of them decided
        before, not sent yet or sent and to be repeated, must not let go of the new hold."""
        if not self.releases and self.sending is None:
            return
        kept = set(job_ids)
        self.releases = [j for j in self.releases if j not in kept]
        if self.sending is not None:
            seq, sending = self.sending
            self.sending = (seq, [j for j in sending if j not in kept]) if sending else None

    def hurry(self, now: float) -> None:
        """Flush at the next turn: a task waits for the answer."""
        if self._due is None or self._due > now:
            self._due = max(now, self.backoff.next_at) if self.backoff.failures else now

    def drop(self, job_id: str) -> None:
        """Forget the queued updates of ``job_id`` (a job the launcher lost to others)."""
        self.pending = [u for u in self.pending if u.job_id != job_id]

    def clear(self) -> None:
        """Forget everything queued (the session it belongs to is gone)."""
        self.pending, self.releases, self.sending, self._due = [], [], None, None
        self.backoff.reset()

    def due_at(self) -> float | None:
        """When the buffer should be flushed, or None when it is empty."""
        return self._due if len(self) else None

    def flush(self, now: float, claim: ClaimRequest | None = None) -> FlushResult:
        """Send every queued update in one call, then the releases; keep them on failure.

        ``claim``: a claim to send in the same call when there are updates to send (one
        transaction instead of two; the children the updates free can be claimed at once).
        """
        if not len(self) or not self.session_id:
            return FlushResult()
        batch = self.pending
        claimed: list[JobOut] | None = None
        try:
            if batch and claim is not None:
                answer = self.backend.record_and_claim(self.session_id, batch, claim)
                results, claimed = answer.results, answer.jobs
            else:
                results = self.backend.record_updates(self.session_id, batch) if batch else []
        except NotFound:
            return FlushResult(lost=True)
        except BalsamError as exc:
            outcome = self._failed(exc, now, len(batch))
            outcome.claim_sent = bool(batch) and claim is not None
            return outcome
        self.pending = self.pending[len(batch) :]
        sent = claimed is not None
        failure = self._send_releases()
        if failure is not None:
            outcome = self._failed(failure, now, len(self))
            outcome.results, outcome.failed = results, False
            outcome.claim_sent, outcome.claimed, outcome.error = sent, claimed, None
            return outcome
        self.backoff.reset()
        self._due = now + self.interval if len(self) else None
        return FlushResult(results=results, claim_sent=sent, claimed=claimed)

    def _send_releases(self) -> BalsamError | None:
        """Send the queued releases (after the updates: a release ends the hold they need)."""
        if self.sending is None and self.releases:
            self.sending, self.releases = (self.next_seq(), self.releases), []
        if self.sending is None:
            return None
        seq, job_ids = self.sending
        try:
            self.backend.release_jobs(self.session_id, job_ids, seq)
        except NotFound:
            # The session is gone: nothing is held any more, so nothing is left to release.
            self.sending = None
            return None
        except BalsamError as exc:
            return exc
        self.sending = None
        return None

    def _failed(self, exc: BalsamError, now: float, size: int) -> FlushResult:
        if not exc.transient:
            log.error("the workflow database refused %d state change(s): %s", size, exc)
            return FlushResult(failed=True, broken=str(exc), error=exc)
        wait = self.backoff.failed(now)
        log.warning("cannot record %d state change(s), will retry in %.1f s: %s", size, wait, exc)
        self._due = self.backoff.next_at
        return FlushResult(failed=True, error=exc)
