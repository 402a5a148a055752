"""The apps a launcher's claimed jobs run, looked up at most once a second.

A claim of a few jobs (a dependency chain releases one at a time) used to cost a second
query, for their apps; across a chain of short jobs that was a tenth of the launcher's time.
Apps change rarely, and a change made while a launcher runs reaches jobs claimed from
:data:`APP_FRESH_SECONDS` later on. An app not seen before is always looked up, so a job of a
newly registered app is never failed as "not registered" from a stale answer.
"""

from __future__ import annotations

from collections.abc import Iterable

from balsam.backends.base import Backend
from balsam.schemas.apps import AppOut
from balsam.schemas.queries import clause_from_kwargs

#: How long a looked-up app is used before it is read again.
APP_FRESH_SECONDS = 1.0


class AppCache:
    """Apps by name, read from the database when unknown or older than the freshness bound."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend
        self._apps: dict[str, AppOut] = {}
        self._read_at = float("-inf")

    def apps_for(self, names: Iterable[str], now: float) -> dict[str, AppOut]:
        """The apps named (those registered), in one query when any must be read."""
        wanted = set(names)
        if not wanted:
            return {}
        stale = now - self._read_at >= APP_FRESH_SECONDS
        if stale or not wanted <= self._apps.keys():
            ask = wanted | self._apps.keys() if stale else wanted
            clause = clause_from_kwargs({"name__in": sorted(ask)})
            found = {app.name: app for app in self.backend.list_apps([clause])}
            if stale:
                self._apps, self._read_at = found, now
            else:
                self._apps.update(found)
        return {name: self._apps[name] for name in wanted if name in self._apps}
