"""What a failed transfer raises: permanent (the job fails at once) or transient (retried)."""

from __future__ import annotations

from balsam.errors import BalsamError


class TransferError(BalsamError):
    """A file could not be staged (missing source, unwritable destination, refused URL)."""


class TransientTransferError(TransferError):
    """A transfer failed in a way a later try may not (a refused or dropped connection, a
    time-out, an HTTP 5xx, rsync's network exit codes): retried a bounded number of times."""

    transient = True
