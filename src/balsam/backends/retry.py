"""Repeating Backend calls that failed transiently, for callers that can wait (the CLI, the API).

Every Backend call can be sent twice with the effect of once (see :mod:`balsam.backends.base`),
so a call that failed with a :class:`~balsam.errors.TransientError` — the database restarting,
a lock that timed out, a connection dropped after the work was committed — is simply sent
again, after a pause that doubles each time (with jitter), up to ``attempts`` tries. Permanent
errors (refused, not found, invalid) are raised at once. The launcher does not use this: its
loop must never sleep, so it repeats failed calls on later turns instead.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

from balsam.backends.base import Backend
from balsam.errors import AlreadyExists, TransientError
from balsam.schemas.apps import AppCreate, AppOut

log = logging.getLogger(__name__)

#: Calls that are never repeated (local, cannot fail transiently).
LOCAL_CALLS = frozenset({"close"})


class RetryingBackend:
    """Wraps a Backend; repeats calls that raise TransientError, with exponential backoff."""

    def __init__(
        self,
        inner: Backend,
        attempts: int = 6,
        first: float = 0.2,
        longest: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.inner = inner
        self.attempts = attempts
        self.first = first
        self.longest = longest
        self._sleep = sleep

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name.startswith("_") or name in LOCAL_CALLS or not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            return self.call(name, target, *args, **kwargs)

        return call

    def create_app(self, spec: AppCreate) -> AppOut:
        """Register an app; a repeat that finds exactly this app registered returns it.

        Apps are created by name, not by an id the client chose, so the repeat of a create
        whose answer was lost finds the name taken: by this very app, if nothing else changed.
        """
        tried = False

        def attempt(app: AppCreate) -> AppOut:
            nonlocal tried
            try:
                return self.inner.create_app(app)
            except AlreadyExists:
                if not tried:
                    raise
                existing = self.inner.get_app(app.name)
                if AppCreate.model_validate(existing.model_dump(exclude={"id"})) != app:
                    raise
                return existing
            finally:
                tried = True

        return self.call("create_app", attempt, spec)  # type: ignore[no-any-return]

    def call(self, name: str, target: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``target``, repeating it while it fails transiently (``attempts`` at most).

        A call given a one-pass iterator (a generator of job specs) cannot be repeated: the
        first try consumed it. It is made once.
        """
        if any(isinstance(a, Iterator) for a in (*args, *kwargs.values())):
            return target(*args, **kwargs)
        for attempt in range(1, self.attempts + 1):
            try:
                return target(*args, **kwargs)
            except TransientError as exc:
                if attempt == self.attempts:
                    raise
                pause = min(self.longest, self.first * 2.0 ** (attempt - 1))
                pause *= random.uniform(0.75, 1.0)
                log.warning("%s failed (%s); trying again in %.1f s", name, exc, pause)
                self._sleep(pause)
        raise AssertionError("unreachable")  # pragma: no cover


def retrying(backend: Backend, **options: Any) -> Backend:
    """``backend`` with transient failures repeated (see :class:`RetryingBackend`)."""
    wrapped: Backend = RetryingBackend(backend, **options)
    return wrapped
