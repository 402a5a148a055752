"""Secrets at rest for an owned PostgreSQL cluster: generated passwords, the SCRAM verifiers
the server stores, and the files of mode 0600 that hold them.

A password is written only to a file created with mode 0600 (``os.open`` with that mode, so
there is no moment when it is readable by others, whatever the umask), in libpq's passfile
format (``host:port:database:user:password``), which every libpq client reads with
``passfile=FILE`` and which libpq itself ignores when it can be read by others. Passwords never
appear on a command line (``ps`` shows every process's argv to every user) nor in ``settings.yml``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import stat
from pathlib import Path

from balsam.errors import ConfigError

#: Random bytes in a generated password (43 URL-safe characters: no ':' or '\\' to escape in
#: a passfile, no quote to escape in SQL).
PASSWORD_BYTES = 32
#: PostgreSQL's own default for the verifiers it computes.
SCRAM_ITERATIONS = 4096


def passfile_line(user: str, password: str, dbname: str = "*") -> str:
    """One libpq passfile line for ``user`` on any host and port (the port may move)."""
    return f"*:*:{dbname}:{user}:{password}\n"


def new_password() -> str:
    """A random password for a PostgreSQL role."""
    return secrets.token_urlsafe(PASSWORD_BYTES)


def write_secret(path: Path, text: str) -> None:
    """Create ``path`` holding ``text``, mode 0600 from its first byte (it never exists with a
    wider mode, whatever the umask); an old file at ``path`` is replaced."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)


def check_secret(path: Path) -> None:
    """ConfigError (one line) when the secret file ``path`` is missing, is not this user's,
    or others have access to it (:func:`check_private`)."""
    try:
        info = path.stat()
    except OSError as exc:
        raise ConfigError(f"cannot read the password file {path}: {exc.strerror}") from None
    if info.st_uid != os.geteuid():
        raise ConfigError(f"refusing to use the password file {path}: it belongs to another user")
    check_private(path, info.st_mode)


def check_private(path: Path, mode: int | None = None) -> None:
    """ConfigError (one line) when the group or others may read or write the file ``path``.

    libpq ignores such a passfile with a warning of its own and then fails for want of a
    password; this says what to do instead. A missing file is left to the caller.
    """
    if mode is None:
        try:
            mode = path.stat().st_mode
        except OSError:
            return
    mode = stat.S_IMODE(mode)
    if mode & 0o077:
        raise ConfigError(
            f"refusing to use the password file {path}: other users have access to it "
            f"(mode {mode:04o}); run 'chmod 600 {path}'"
        )


def scram_verifier(password: str, iterations: int = SCRAM_ITERATIONS) -> str:
    """The SCRAM-SHA-256 verifier PostgreSQL stores for ``password`` (RFC 5802/7677).

    Computed here so a password never reaches the server (its log would show a failed
    statement); the server takes a verifier in ``PASSWORD '...'`` as it is.
    """
    salt = secrets.token_bytes(16)
    salted = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha256")
    stored_key = hashlib.sha256(client_key).digest()
    server_key = hmac.digest(salted, b"Server Key", "sha256")

    def b64(raw: bytes) -> str:
        return base64.b64encode(raw).decode()

    return f"SCRAM-SHA-256${iterations}:{b64(salt)}${b64(stored_key)}:{b64(server_key)}"
