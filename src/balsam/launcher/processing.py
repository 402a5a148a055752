"""Who does a job's steps around its run: this launcher, or the service's processing launcher.

With ``service.processing`` in the site settings, staging, preprocessing, postprocessing and
the error and timeout handlers run under ``balsam service`` on its host, so that compute
nodes spend their allocation on runs only. Compute launchers then claim only jobs ready to run
(PREPROCESSED, RESTART_READY) and let go of a job after its run instead of postprocessing it.
They do so only while a service holds the workflow database's lock: with no service alive they
take every step themselves, as without the setting, so no job waits for a service that is not
there. Which of the two holds is looked up at most every ``CHECK_SECONDS``.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from balsam.backends.base import Backend
from balsam.errors import BalsamError
from balsam.launcher.options import LauncherRole
from balsam.schemas.service import SERVICE_LOCK

log = logging.getLogger(__name__)

#: How often a compute launcher looks again whether a service is alive.
CHECK_SECONDS = 10.0


class ProcessingSplit:
    """Whether this launcher leaves the steps around runs to the service, now."""

    def __init__(self, backend: Backend, role: LauncherRole, service_processing: bool) -> None:
        self.backend = backend
        self.role = role
        self.service_processing = service_processing
        self._deferring = False
        self._checked_at: float | None = None

    @property
    def processing_only(self) -> bool:
        """This launcher runs no job: it is the service's processing launcher."""
        return self.role is LauncherRole.PROCESSING

    def defers(self, now: float) -> bool:
        """True while a service alive does the steps around runs (this launcher only runs)."""
        if self.processing_only or not self.service_processing:
            return False
        if self._checked_at is None or now - self._checked_at >= CHECK_SECONDS:
            self._checked_at = now
            self._deferring = self._service_alive()
        return self._deferring

    def _service_alive(self) -> bool:
        try:
            lock = self.backend.get_service_lock(SERVICE_LOCK)
        except BalsamError as exc:
            log.warning("cannot tell whether a service runs, doing every step: %s", exc)
            return False
        alive = lock is not None and lock.expires_at > datetime.now(UTC)
        if alive != self._deferring:
            log.info(
                "the service %s: %s",
                "is alive" if alive else "is not running",
                "it does the steps around runs" if alive else "this launcher does every step",
            )
        return alive
