"""Balsam's exception tree. Every error a user can cause is a :class:`BalsamError`.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
adapters translate driver, scheduler and HTTP errors into these with ``raise ... from``.

Errors say whether repeating the call can help: :class:`TransientError` (the database or
server was unreachable, restarting, or a lock timed out) may go away by itself, so callers
retry it with backoff; every other error is *permanent* (refused, not found, invalid) and is
never retried. Every call of the Backend protocol can be repeated safely (see
docs/concepts.md), so a transient error whose call did commit costs nothing when retried.
"""

from __future__ import annotations

from typing import ClassVar


class BalsamError(Exception):
    """Root of every error Balsam raises on purpose."""

    exit_code = 1
    #: Whether repeating the same call may succeed (see :class:`TransientError`).
    transient: ClassVar[bool] = False


class TransientError(BalsamError):
    """A failure that may go away by itself: repeating the same call can succeed.

    The call may or may not have taken effect; Backend calls are idempotent, so the caller
    repeats it unchanged.
    """

    exit_code = 5
    transient = True


class ConfigError(BalsamError):
    """Missing or invalid settings: no active database, a bad settings file, a bad path."""

    exit_code = 2


class ValidationError(BalsamError):
    """Input that can never be valid: a negative node count, text where a number goes, ..."""

    exit_code = 2


class NotFound(BalsamError):
    """No job, app or database matches what was asked for."""

    exit_code = 3


class Ambiguous(BalsamError):
    """An id prefix or name that matches more than one object."""

    exit_code = 3


class AlreadyExists(BalsamError):
    """Creating an object whose unique name is taken."""

    exit_code = 4


class InvalidTransition(BalsamError):
    """A state change that Balsam's state machine does not allow."""

    exit_code = 4


class DependencyError(BalsamError):
    """A dependency that would make a cycle, or a job depending on itself."""

    exit_code = 4


class AccessDenied(BalsamError):
    """A Balsam server refused the caller: no valid token (expired, revoked, unknown), or no
    role on that workflow database that allows the call (permanent until granted)."""

    exit_code = 9


class DatabaseError(BalsamError):
    """The workflow database gave an unexpected error (permanent: repeating will not help)."""

    exit_code = 5


class DatabaseUnavailable(DatabaseError, TransientError):
    """The workflow database could not be reached, is restarting, or a lock timed out."""

    exit_code = 5
    transient = True


class SchedulerError(BalsamError):
    """The batch scheduler refused or failed a request."""

    exit_code = 6


class LauncherError(BalsamError):
    """The launcher cannot run in this environment."""

    exit_code = 7


class JobError(BalsamError):
    """A job gives no result: it failed, was killed, or ended without its function's value
    (``job.result()``; see docs/functions.md)."""

    exit_code = 8

    def __init__(self, message: str, job_id: str | None = None) -> None:
        super().__init__(message)
        self.job_id = job_id


class RemoteTraceback(Exception):
    """The traceback text of an exception raised in a job's process. Set as the ``__cause__``
    of a :class:`RemoteError`, so that a traceback printed here shows the remote one first."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.text = text

    def __str__(self) -> str:
        return f'\n"""\n{self.text.rstrip()}\n"""'


class RemoteError(JobError):
    """A job's function raised: the remote exception's type name, message and traceback
    text (the exception itself stays in the job's process: nothing is unpickled here)."""

    def __init__(
        self,
        job_id: str | None,
        remote_type: str,
        remote_message: str,
        remote_traceback: str,
        label: str = "",
    ) -> None:
        first = remote_message.splitlines()[0] if remote_message else ""
        said = f"{remote_type}: {first}" if first else remote_type
        super().__init__(f"job {label or job_id}: its function raised {said}", job_id)
        self.remote_type = remote_type
        self.remote_message = remote_message
        self.remote_traceback = remote_traceback
        if remote_traceback:
            self.__cause__ = RemoteTraceback(remote_traceback)


def is_transient(exc: BaseException) -> bool:
    """Whether repeating the call that raised ``exc`` may succeed."""
    return isinstance(exc, BalsamError) and exc.transient
