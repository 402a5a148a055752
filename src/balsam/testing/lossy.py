"""A Backend wrapper that loses answers: the call takes effect, then the caller hears an error.

This is what a dropped connection or a server restart does to a caller at the worst moment:
the transaction committed, but the answer never arrived, so the caller must send the call
again. :class:`LossyBackend` forwards each call to the real Backend and then, for a share of
the calls of every method (half by default, drawn from a seeded generator so a run can be
repeated), throws its answer away and raises :class:`~balsam.errors.TransientError` instead.
Losses are at random rather than alternating, so that an operation made of several calls in a
row (count this, then that) is not made to fail at the same call every time. A caller that
repeats transient failures, as every Balsam caller must, gets through on a repeat; if the
repeat does the work twice (a duplicate job, a state change applied twice, a claim whose jobs
are never heard of), the tests that use this wrapper see it.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

from balsam.backends.base import Backend
from balsam.errors import TransientError

#: Calls whose answers are never lost: closing connections is local.
NEVER_LOST = frozenset({"close"})


class AnswerLost(TransientError):
    """The call took effect, but its answer was lost on the way back (LossyBackend)."""


class LossyBackend:
    """Wraps ``inner``; loses the answers of a share ``loss`` of the calls (after they ran).

    ``methods`` limits the loss to those method names (default: every call but close).
    ``calls`` and ``lost`` count the calls made and the answers lost, per method.
    """

    def __init__(
        self,
        inner: Backend,
        loss: float = 0.5,
        seed: int = 0,
        methods: frozenset[str] | None = None,
    ) -> None:
        self.inner = inner
        self.loss = loss
        self.methods = methods
        self.calls: Counter[str] = Counter()
        self.lost: Counter[str] = Counter()
        self._random = random.Random(seed)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target) or name.startswith("_") or name in NEVER_LOST:
            return target
        if self.methods is not None and name not in self.methods:
            return target
        return self._lossy(name, target)

    def _lossy(self, name: str, target: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            result = target(*args, **kwargs)
            with self._lock:
                self.calls[name] += 1
                lose = self._random.random() < self.loss
                if lose:
                    self.lost[name] += 1
            if lose:
                raise AnswerLost(f"{name}: the answer was lost after the call took effect")
            return result

        return call
