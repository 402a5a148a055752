"""Bounded retries of transient transfer failures, with exponential backoff."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from balsam.platform.transfer.errors import TransferError, TransientTransferError

log = logging.getLogger(__name__)
R = TypeVar("R")
#: The longest pause between two tries, whatever the backoff setting doubles to.
MAX_PAUSE_SECONDS = 300.0


def retrying(
    action: Callable[[], R],
    what: str,
    max_retries: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = time.sleep,
) -> R:
    """``action()``, tried again after a :class:`TransientTransferError` up to ``max_retries``
    times (pausing ``backoff_seconds``, doubling); the last error is raised as a permanent
    :class:`TransferError` saying how many tries were made. Other errors pass at once."""
    attempt = 0
    while True:
        try:
            return action()
        except TransientTransferError as exc:
            if attempt >= max_retries:
                tries = f"{attempt + 1} tr{'y' if attempt == 0 else 'ies'}"
                raise TransferError(f"{what}: {exc} (gave up after {tries})") from exc
            pause = min(backoff_seconds * 2**attempt, MAX_PAUSE_SECONDS)
            log.warning("%s: %s; trying again in %.1f s", what, exc, pause)
            attempt += 1
            sleep(pause)
