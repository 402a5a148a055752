"""What ``balsam login URL`` keeps: the server's database URL and a token, for clients that
have no workflow database directory of their own (a laptop, an experiment's control machine).

Two files in ``BALSAM_HOME`` (``~/.balsam``), each mode 0600 and refused when group or others
can read it: ``login.json`` (the URL and the CA bundle, if any) and ``login.token`` (the token
alone, on one line). The token has a file of its own so that the RemoteBackend reads it again
when the server answers 401: a ``balsam login`` with a new token renews every running client.
The login is used only when neither ``BALSAM_URL`` nor ``BALSAM_DB_PATH`` is set.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from balsam.config import balsam_home
from balsam.errors import ConfigError
from balsam.private_files import refuse_shared

LOGIN_FILE = "login.json"
TOKEN_FILE = "login.token"


@dataclass(frozen=True)
class Login:
    """A saved login: where the database is served, and the file holding the token."""

    url: str
    token_file: Path
    ca_bundle: Path | None = None


def login_files() -> tuple[Path, Path]:
    """The login's two files: the URL's and the token's."""
    home = balsam_home()
    return home / LOGIN_FILE, home / TOKEN_FILE


def load_login() -> Login | None:
    """The saved login, or None when there is none (ConfigError when it is unreadable,
    malformed, or readable by others)."""
    where, token_file = login_files()
    try:
        text = where.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or exc}") from None
    refuse_shared(where, "login file")
    try:
        saved = json.loads(text)
        url = saved["url"]
        bundle = saved.get("ca_bundle")
    except (ValueError, KeyError, TypeError, AttributeError):
        raise ConfigError(f"{where} is not a login 'balsam login' wrote: run it again") from None
    if not isinstance(url, str) or not isinstance(bundle, str | None):
        raise ConfigError(f"{where} is not a login 'balsam login' wrote: run it again")
    return Login(url, token_file, Path(bundle) if bundle else None)


def save_login(url: str, token: str, ca_bundle: Path | None) -> Login:
    """Keep ``url`` and ``token`` (the token first, so a login file never points at an old
    token); both files are written whole, 0600, and replace any earlier login."""
    where, token_file = login_files()
    home = where.parent
    home.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(token_file, token + "\n")
    record = {"url": url, "ca_bundle": str(ca_bundle) if ca_bundle else None}
    _write_private(where, json.dumps(record, indent=2) + "\n")
    return Login(url, token_file, ca_bundle)


def remove_login() -> bool:
    """Forget the saved login; whether there was one."""
    where, token_file = login_files()
    existed = where.exists()
    where.unlink(missing_ok=True)
    token_file.unlink(missing_ok=True)
    return existed


def _write_private(path: Path, text: str) -> None:
    """Write ``path`` through a new 0600 file renamed over it, so it is never seen half
    written or with a wider mode."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(tmp, path)
