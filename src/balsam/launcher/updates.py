"""Buffered state changes: many jobs' updates written in one transaction per flush.

The launcher adds an update whenever a job reaches a new state and flushes the buffer every
``flush_interval_seconds`` (and before claiming or exiting). A flush that cannot reach the
database keeps its updates for the next try. Updates the service refuses (a job a user killed
or reset meanwhile, or one this launcher no longer holds) are reported by job id so the
launcher stops working on those jobs.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime

from balsam.backends.base import Backend
from balsam.domain.states import TERMINAL_STATES, JobState
from balsam.errors import DatabaseError
from balsam.schemas.jobs import StateUpdate

log = logging.getLogger(__name__)


@dataclass
class FlushResult:
    """What a flush did: how many updates were written, which jobs were refused, and why."""

    written: int = 0
    rejected: dict[str, str] = field(default_factory=dict)
    ended_jobs: bool = False
    failed: bool = False


class UpdateBuffer:
    """State updates waiting to be written by one launcher session."""

    def __init__(self, backend: Backend, session_id: int, interval: float) -> None:
        self.backend = backend
        self.session_id = session_id
        self.interval = interval
        self.pending: list[StateUpdate] = []
        self.first_at: float | None = None

    def __len__(self) -> int:
        return len(self.pending)

    def add(
        self,
        job_id: str,
        state: JobState,
        now: float,
        message: str = "",
        return_code: int | None = None,
        release: bool = False,
        lost: bool = False,
    ) -> None:
        """Queue one job's move to ``state``, stamped with the current time."""
        # Built by the launcher itself from valid values: skip validation on this hot path.
        update = StateUpdate.model_construct(
            job_id=job_id,
            state=state,
            message=message,
            return_code=return_code,
            timestamp=datetime.now(UTC),
            release=release,
            lost=lost,
        )
        self.pending.append(update)
        if self.first_at is None:
            self.first_at = now

    def drop(self, job_id: str) -> None:
        """Forget the queued updates of ``job_id`` (a job a user killed)."""
        self.pending = [u for u in self.pending if u.job_id != job_id]

    def clear(self) -> None:
        """Forget every queued update (the session they belong to is gone)."""
        self.pending, self.first_at = [], None

    def due_at(self) -> float | None:
        """When the buffer should be flushed, or None when it is empty."""
        if not self.pending or self.first_at is None:
            return None
        return self.first_at + self.interval

    def flush(self, now: float) -> FlushResult:
        """Write every queued update in one call; keep them if the database is unreachable."""
        if not self.pending:
            return FlushResult()
        batch, self.pending, self.first_at = self.pending, [], None
        try:
            messages = self.backend.record_updates(self.session_id, batch)
        except DatabaseError as exc:
            log.warning("cannot record %d state changes, will retry: %s", len(batch), exc)
            self.pending = batch + self.pending
            self.first_at = now
            return FlushResult(failed=True)
        return FlushResult(
            written=len(batch) - len(messages),
            rejected=match_rejections(batch, messages),
            ended_jobs=any(u.state in TERMINAL_STATES or u.release for u in batch),
        )


def match_rejections(batch: list[StateUpdate], messages: list[str]) -> dict[str, str]:
    """Which jobs the refusal messages name (the service names jobs by id prefix)."""
    rejected: dict[str, str] = {}
    for message in messages:
        for update in batch:
            if update.job_id[:8] in message and update.job_id not in rejected:
                rejected[update.job_id] = message
                break
    return rejected
