"""Balsam's exception tree. Every error a user can cause is a :class:`BalsamError`.

The CLI prints ``str(error)`` as one line on stderr and exits with ``error.exit_code``;
adapters translate driver, scheduler and HTTP errors into these with ``raise ... from``.
"""

from __future__ import annotations


class BalsamError(Exception):
    """Root of every error Balsam raises on purpose."""

    exit_code = 1


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


class DatabaseError(BalsamError):
    """The workflow database could not be reached or gave an unexpected error."""

    exit_code = 5


class SchedulerError(BalsamError):
    """The batch scheduler refused or failed a request."""

    exit_code = 6


class LauncherError(BalsamError):
    """The launcher cannot run in this environment."""

    exit_code = 7
