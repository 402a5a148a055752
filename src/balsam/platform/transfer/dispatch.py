"""The one entry point of stage-in and stage-out: the adapter by URL, bounded retries.

Adapters are chosen by short name (:func:`~balsam.platform.transfer.urls.adapter_name`) from
the explicit :data:`ADAPTERS` table. One :class:`Transfers` serves a whole launcher (its stager
threads call it at once); it owns the Globus batcher, made when a globus:// URL first needs it,
and closed by :meth:`Transfers.close`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, TypeVar

from balsam.platform.transfer.globus import GlobusAdapter, GlobusBatcher
from balsam.platform.transfer.http import HttpAdapter
from balsam.platform.transfer.local import LocalAdapter, ScpAdapter
from balsam.platform.transfer.retry import retrying
from balsam.platform.transfer.rsync import RsyncAdapter
from balsam.platform.transfer.urls import adapter_name
from balsam.transfer_settings import TransferSettings

if TYPE_CHECKING:
    import globus_sdk

R = TypeVar("R")


class Adapter(Protocol):
    """What every scheme's adapter does."""

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """Bring ``url`` into ``dst_dir``; returns what arrived."""
        ...

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """Send the entries of ``src_dir`` matching ``patterns`` to ``url``; returns them."""
        ...


def _globus(transfers: Transfers) -> Adapter:
    return GlobusAdapter(transfers.settings, transfers.batcher())


#: Adapter short names and how each is built for a :class:`Transfers`.
ADAPTERS: dict[str, Callable[[Transfers], Adapter]] = {
    "local": lambda t: LocalAdapter(),
    "scp": lambda t: ScpAdapter(),
    "rsync": lambda t: RsyncAdapter(t.settings),
    "http": lambda t: HttpAdapter(t.settings),
    "globus": _globus,
}


class Transfers:
    """Stage-in and stage-out for one launcher (thread-safe)."""

    settings: TransferSettings

    def __init__(
        self,
        settings: TransferSettings | None = None,
        globus_client: Callable[[], globus_sdk.TransferClient] | None = None,
    ) -> None:
        self.settings = settings or TransferSettings()
        self._globus_client = globus_client
        self._batcher: GlobusBatcher | None = None
        self._adapters: dict[str, Adapter] = {}
        # Re-entrant: building the Globus adapter (under the lock) makes the batcher (under it).
        self._lock = threading.RLock()

    def adapter(self, name: str) -> Adapter:
        """The adapter of that short name (one per Transfers)."""
        with self._lock:
            if name not in self._adapters:
                self._adapters[name] = ADAPTERS[name](self)
            return self._adapters[name]

    def batcher(self) -> GlobusBatcher:
        """The shared Globus batcher (made on first use)."""
        with self._lock:
            if self._batcher is None:
                from balsam.platform.transfer import globus_auth

                factory = self._globus_client or (
                    lambda: globus_auth.transfer_client(self.settings)
                )
                self._batcher = GlobusBatcher(self.settings, factory)
            return self._batcher

    def stage_in(self, url: str, base: Path, dst_dir: Path) -> list[Path]:
        """Bring ``url`` into ``dst_dir`` (TransferError when it cannot, after retries)."""
        adapter = self.adapter(adapter_name(url, "stage in from"))
        return self._retrying(lambda: adapter.stage_in(url, base, dst_dir), f"stage-in from {url}")

    def stage_out(self, src_dir: Path, patterns: list[str], url: str, base: Path) -> list[Path]:
        """Send the entries of ``src_dir`` matching ``patterns`` to ``url``."""
        adapter = self.adapter(adapter_name(url, "stage out to"))
        return self._retrying(
            lambda: adapter.stage_out(src_dir, patterns, url, base), f"stage-out to {url}"
        )

    def _retrying(self, action: Callable[[], R], what: str) -> R:
        s = self.settings
        return retrying(action, what, s.max_retries, s.retry_backoff_seconds)

    def close(self) -> None:
        """Stop the Globus batcher, if one was made."""
        if self._batcher is not None:
            self._batcher.close()
