"""Reads and writes on an open SQLAlchemy session. Never commits: services own transactions."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, insert, or_, select, update
from sqlalchemy.orm import Session

from balsam.store.bulk import insert_rows
from balsam.store.tables import EVENTS, AppRow, EventRow, JobParentRow, JobRow, utcnow


def apps_by_name(session: Session, names: Iterable[str]) -> dict[str, AppRow]:
    """Apps whose names are in ``names``, keyed by name."""
    wanted = set(names)
    if not wanted:
        return {}
    rows = session.scalars(select(AppRow).where(AppRow.name.in_(wanted)))
    return {row.name: row for row in rows}


def jobs_by_id(session: Session, ids: Iterable[str], lock: bool = False) -> dict[str, JobRow]:
    """Jobs whose ids are in ``ids``, keyed by id (row-locked on PostgreSQL if ``lock``)."""
    wanted = list(dict.fromkeys(ids))
    found: dict[str, JobRow] = {}
    for start in range(0, len(wanted), 500):
        stmt = select(JobRow).where(JobRow.job_id.in_(wanted[start : start + 500]))
        if lock:
            stmt = stmt.with_for_update()
        found.update((row.job_id, row) for row in session.scalars(stmt))
    return found


def ids_with_prefix(session: Session, prefix: str, limit: int = 2) -> list[str]:
    """Up to ``limit`` job ids that start with ``prefix``."""
    stmt = select(JobRow.job_id).where(JobRow.job_id.startswith(prefix, autoescape=True))
    return list(session.scalars(stmt.limit(limit)))


def parent_ids(session: Session, child_ids: Iterable[str]) -> dict[str, list[str]]:
    """Parent ids of each child in ``child_ids`` (children with none are absent)."""
    result: dict[str, list[str]] = {}
    wanted = list(child_ids)
    for start in range(0, len(wanted), 500):
        stmt = select(JobParentRow.child_id, JobParentRow.parent_id).where(
            JobParentRow.child_id.in_(wanted[start : start + 500])
        )
        for child, parent in session.execute(stmt):
            result.setdefault(child, []).append(parent)
    return result


def child_ids(session: Session, parent_id: str) -> list[str]:
    """Ids of the jobs that depend on ``parent_id``."""
    stmt = select(JobParentRow.child_id).where(JobParentRow.parent_id == parent_id)
    return list(session.scalars(stmt))


def child_edges(session: Session, parent_ids: Sequence[str]) -> list[tuple[str, str]]:
    """(parent, child) edges leaving any of ``parent_ids``."""
    edges: list[tuple[str, str]] = []
    for start in range(0, len(parent_ids), 500):
        stmt = select(JobParentRow.parent_id, JobParentRow.child_id).where(
            JobParentRow.parent_id.in_(parent_ids[start : start + 500])
        )
        edges += [(p, c) for p, c in session.execute(stmt)]
    return edges


def parent_states(session: Session, child_id: str) -> list[str]:
    """States of every parent of ``child_id``."""
    stmt = (
        select(JobRow.state)
        .join(JobParentRow, JobParentRow.parent_id == JobRow.job_id)
        .where(JobParentRow.child_id == child_id)
    )
    return list(session.scalars(stmt))


def parent_states_by_child(session: Session, child_ids: Sequence[str]) -> dict[str, list[str]]:
    """States of every parent of each of ``child_ids`` (one query per 500 children)."""
    found: dict[str, list[str]] = {child: [] for child in child_ids}
    for start in range(0, len(child_ids), 500):
        stmt = (
            select(JobParentRow.child_id, JobRow.state)
            .join(JobRow, JobParentRow.parent_id == JobRow.job_id)
            .where(JobParentRow.child_id.in_(child_ids[start : start + 500]))
        )
        for child, state in session.execute(stmt):
            found[child].append(state)
    return found


def add_edges(session: Session, edges: Sequence[tuple[str, str]]) -> None:
    """Insert (parent, child) dependency edges."""
    if edges:
        session.execute(insert(JobParentRow), [{"parent_id": p, "child_id": c} for p, c in edges])


EVENT_COLUMNS = ("job_id", "timestamp", "from_state", "to_state", "message")


def add_events(session: Session, events: Sequence[dict[str, Any]]) -> None:
    """Append history rows (dicts with job_id, from_state, to_state, message, timestamp)."""
    if events:
        # Straight to the driver: the hottest write (see balsam.store.bulk). Rows the ORM
        # still holds go first, for the foreign key.
        session.flush()
        rows = [
            (e["job_id"], e["timestamp"], str(e["from_state"]), str(e["to_state"]), e["message"])
            for e in events
        ]
        insert_rows(session, EVENTS, EVENT_COLUMNS, rows)


def insert_jobs(session: Session, rows: Sequence[dict[str, Any]]) -> None:
    """Bulk-insert new job rows."""
    if rows:
        session.execute(insert(JobRow), list(rows))


def latest_messages(session: Session, job_ids: Sequence[str]) -> dict[str, str]:
    """The message of each job's most recent event."""
    found: dict[str, str] = {}
    for start in range(0, len(job_ids), 500):
        chunk = list(job_ids[start : start + 500])
        newest = (
            select(EventRow.job_id, func.max(EventRow.id).label("id"))
            .where(EventRow.job_id.in_(chunk))
            .group_by(EventRow.job_id)
            .subquery()
        )
        stmt = select(EventRow.job_id, EventRow.message).join(newest, EventRow.id == newest.c.id)
        found.update((jid, message) for jid, message in session.execute(stmt))
    return found


def event(
    job_id: str, old: str, new: str, message: str, when: datetime | None = None
) -> dict[str, Any]:
    """One history row as a dict for :func:`add_events`."""
    return {
        "job_id": job_id,
        "from_state": old,
        "to_state": new,
        "message": message,
        "timestamp": when or utcnow(),
    }


def count_by_state(session: Session, where: Any) -> dict[str, int]:
    """Number of jobs per state among those matching ``where``."""
    stmt = select(JobRow.state, func.count()).where(where).group_by(JobRow.state)
    return {state: n for state, n in session.execute(stmt)}


def job_shapes(session: Session, where: Any) -> list[tuple[int, int, float, int]]:
    """``(num_nodes, node_packing_count, wall_time_minutes, count)`` of the jobs matching
    ``where``, largest first."""
    cols = (JobRow.num_nodes, JobRow.node_packing_count, JobRow.wall_time_minutes)
    stmt = select(*cols, func.count()).where(where).group_by(*cols).order_by(*cols)
    return [(n, p, float(w), c) for n, p, w, c in session.execute(stmt)][::-1]


def release(session: Session, session_id: int, job_ids: Sequence[str], seq: int = 0) -> None:
    """Drop ``session_id``'s hold on ``job_ids``.

    With ``seq`` (the session's call number of the release), a job the session claimed or
    updated by a later call keeps its hold: that is a repeat of an old release arriving after
    the job was claimed again.
    """
    if not job_ids:
        return
    stmt = update(JobRow).where(JobRow.job_id.in_(list(job_ids)), JobRow.session_id == session_id)
    if seq:
        stmt = stmt.where(
            or_(
                JobRow.update_session.is_(None),
                JobRow.update_session != session_id,
                JobRow.update_seq.is_(None),
                JobRow.update_seq <= seq,
            )
        )
    session.execute(stmt.values(session_id=None))
