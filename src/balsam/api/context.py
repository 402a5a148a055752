"""Which Backend (and workflow database directory) the Python API talks to.

By default the API opens, on first use, the Backend of the active workflow database
(``BALSAM_DB_PATH``, as ``source balsamactivate`` or the launcher sets it); nothing is opened at
import time, so ``from balsam.launcher import dag`` stays cheap. If ``BALSAM_DB_PATH`` changes,
the next call opens the new database and closes the old one.

Tests, the launcher and the service inject the Backend they already hold with
:func:`use_backend`, which applies at once and, used as a context manager, restores the
previous choice on exit. An injected Backend belongs to the caller and is never closed here.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from balsam.backends.base import Backend
from balsam.config import Site, load_site


@dataclass
class _Binding:
    """A backend the API uses and, when known, the site it serves."""

    backend: Backend
    site: Site | None


_injected: list[_Binding] = []
_default: dict[str, _Binding] = {}
_atexit_registered = False


class BackendScope:
    """What :func:`use_backend` returns: leaving it (``with`` or :meth:`restore`) undoes it."""

    def __init__(self, binding: _Binding) -> None:
        self._binding = binding

    @property
    def backend(self) -> Backend:
        """The injected Backend."""
        return self._binding.backend

    def restore(self) -> None:
        """Go back to the Backend used before this one (idempotent)."""
        if self._binding in _injected:
            _injected.remove(self._binding)

    def __enter__(self) -> Backend:
        return self._binding.backend

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.restore()


def use_backend(backend: Backend, site: Site | str | Path | None = None) -> BackendScope:
    """Make the API use ``backend`` from now on (until the returned scope is left).

    ``site`` (a :class:`Site` or a workflow database path) is where jobs' working directories
    live; without it :attr:`Job.working_directory` falls back to the active site, if any.
    """
    if site is not None and not isinstance(site, Site):
        site = load_site(site)
    binding = _Binding(backend=backend, site=site)
    _injected.append(binding)
    return BackendScope(binding)


def get_backend() -> Backend:
    """The Backend the API uses now (injected, or the active workflow database's)."""
    if _injected:
        return _injected[-1].backend
    return _active_binding().backend


def get_site() -> Site | None:
    """The workflow database directory of the current Backend, when known."""
    if _injected:
        if _injected[-1].site is not None:
            return _injected[-1].site
        return load_site() if os.environ.get("BALSAM_DB_PATH") else None
    return _active_binding().site


def _active_binding() -> _Binding:
    path = os.environ.get("BALSAM_DB_PATH", "")
    cached = _default.get(path)
    if cached is not None:
        return cached
    close_default_backend()
    # Imported here: it pulls in the SQL engine, which plain imports of the API must not pay for.
    from balsam.backends.factory import open_client_backend

    site, backend = open_client_backend()
    binding = _Binding(backend=backend, site=site)
    _default[path] = binding
    _register_atexit()
    return binding


def _register_atexit() -> None:
    global _atexit_registered
    if not _atexit_registered:
        atexit.register(close_default_backend)
        _atexit_registered = True


def close_default_backend() -> None:
    """Close the Backend opened for the active workflow database (reopened on next use)."""
    while _default:
        _, binding = _default.popitem()
        binding.backend.close()
