"""Files and directories only their owner may use: tokens, keys, the server's state."""

from __future__ import annotations

import stat
from pathlib import Path

from balsam.errors import ConfigError


def refuse_shared(path: Path, what: str, chmod: str = "600", mode: int | None = None) -> None:
    """ConfigError (one line, with the ``chmod`` that fixes it) when group or others have any
    access to ``path``; ``mode``: its ``st_mode`` when the caller has read it already."""
    bits = stat.S_IMODE(path.stat().st_mode if mode is None else mode)
    if bits & 0o077:
        raise ConfigError(
            f"{what} {path} has mode {bits:04o}: group and others must have no access "
            f"(chmod {chmod} {path})"
        )
