"""Transient failures are repeated with growing pauses; permanent ones never are."""

from __future__ import annotations

from collections.abc import Iterable
from typing import cast

import pytest

from balsam.backends.base import Backend
from balsam.backends.retry import RetryingBackend
from balsam.errors import (
    AlreadyExists,
    DatabaseUnavailable,
    NotFound,
    TransientError,
    is_transient,
)
from balsam.schemas.apps import AppCreate, AppOut


class Flaky:
    """Fails the first ``failures`` calls with ``error``, then answers."""

    def __init__(self, failures: int, error: Exception) -> None:
        self.failures = failures
        self.error = error
        self.calls = 0

    def count_jobs(self, query: object) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise self.error
        return 7

    def bulk_create_jobs(self, specs: Iterable[object]) -> int:
        self.calls += 1
        list(specs)
        raise self.error


def wrapped(inner: Flaky, pauses: list[float], attempts: int = 4) -> RetryingBackend:
    return RetryingBackend(cast(Backend, inner), attempts=attempts, sleep=pauses.append)


def test_a_transient_failure_is_repeated_with_growing_pauses() -> None:
    inner, pauses = Flaky(3, DatabaseUnavailable("restarting")), []
    assert wrapped(inner, pauses).count_jobs(None) == 7
    assert inner.calls == 4
    assert len(pauses) == 3 and pauses[0] < pauses[1] < pauses[2]


def test_a_permanent_failure_is_raised_at_once() -> None:
    inner, pauses = Flaky(1, NotFound("no such job")), []
    with pytest.raises(NotFound):
        wrapped(inner, pauses).count_jobs(None)
    assert (inner.calls, pauses) == (1, [])


def test_repeats_stop_after_the_last_attempt() -> None:
    inner, pauses = Flaky(10, DatabaseUnavailable("down")), []
    with pytest.raises(DatabaseUnavailable):
        wrapped(inner, pauses, attempts=3).count_jobs(None)
    assert inner.calls == 3


def test_a_call_that_consumed_an_iterator_is_not_repeated() -> None:
    inner, pauses = Flaky(10, DatabaseUnavailable("down")), []
    with pytest.raises(DatabaseUnavailable):
        wrapped(inner, pauses).bulk_create_jobs(iter([1, 2, 3]))
    assert inner.calls == 1


def test_the_error_tree_says_which_errors_are_transient() -> None:
    assert is_transient(DatabaseUnavailable("x")) and is_transient(TransientError("x"))
    assert not is_transient(NotFound("x")) and not is_transient(ValueError("x"))
    assert issubclass(DatabaseUnavailable, TransientError)


class AppsLosingAnswers:
    """Registers apps; the first create's answer is lost after it took effect."""

    def __init__(self) -> None:
        self.apps: dict[str, AppOut] = {}
        self.lose = True

    def create_app(self, spec: AppCreate) -> AppOut:
        if spec.name in self.apps:
            raise AlreadyExists(f"an app named {spec.name!r} exists already")
        self.apps[spec.name] = AppOut(id=len(self.apps) + 1, **spec.model_dump())
        if self.lose:
            self.lose = False
            raise DatabaseUnavailable("connection lost")
        return self.apps[spec.name]

    def get_app(self, name: str) -> AppOut:
        return self.apps[name]


def test_a_repeated_app_registration_finds_its_own_app() -> None:
    inner = AppsLosingAnswers()
    backend = RetryingBackend(cast(Backend, inner), sleep=lambda _: None)
    app = backend.create_app(AppCreate(name="Sim", executable="true"))
    assert (app.name, app.executable, len(inner.apps)) == ("Sim", "true", 1)


def test_a_taken_name_is_still_refused() -> None:
    inner = AppsLosingAnswers()
    inner.lose = False
    backend = RetryingBackend(cast(Backend, inner), sleep=lambda _: None)
    backend.create_app(AppCreate(name="Sim", executable="true"))
    with pytest.raises(AlreadyExists):
        backend.create_app(AppCreate(name="Sim", executable="true"))
    inner.lose = True
    with pytest.raises(AlreadyExists):
        # Lost, then found taken by a different app: not this call's.
        inner.apps.pop("Other", None)
        inner.apps["Other"] = AppOut(id=9, name="Other", executable="false")
        backend.create_app(AppCreate(name="Other", executable="true"))
