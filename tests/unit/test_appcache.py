"""The launcher's app look-ups: known apps at most once a second, unknown ones at once."""

from __future__ import annotations

from balsam.launcher.appcache import APP_FRESH_SECONDS, AppCache
from balsam.schemas.apps import AppCreate, AppOut, AppUpdate
from balsam.schemas.queries import Clause
from balsam.testing import MemoryBackend


class CountingBackend(MemoryBackend):
    """The in-memory backend, counting app look-ups."""

    def __init__(self) -> None:
        super().__init__()
        self.lookups = 0

    def list_apps(self, clauses: list[Clause] | None = None) -> list[AppOut]:
        self.lookups += 1
        return super().list_apps(clauses)


def test_known_apps_are_read_again_only_after_the_freshness_bound() -> None:
    backend = CountingBackend()
    backend.create_app(AppCreate(name="A", executable="echo one"))
    cache = AppCache(backend)
    assert cache.apps_for(["A"], 0.0)["A"].executable == "echo one"
    backend.update_app("A", AppUpdate(executable="echo two"))
    assert cache.apps_for(["A"], 0.5)["A"].executable == "echo one"
    assert backend.lookups == 1
    assert cache.apps_for(["A"], APP_FRESH_SECONDS)["A"].executable == "echo two"
    assert backend.lookups == 2


def test_an_app_not_seen_before_is_looked_up_at_once() -> None:
    backend = CountingBackend()
    backend.create_app(AppCreate(name="A", executable="true"))
    cache = AppCache(backend)
    assert cache.apps_for(["A", "B"], 0.0).keys() == {"A"}
    backend.create_app(AppCreate(name="B", executable="true"))
    assert cache.apps_for(["A", "B"], 0.1).keys() == {"A", "B"}
    assert cache.apps_for([], 0.2) == {}
    assert backend.lookups == 2
