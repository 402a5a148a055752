"""Moving a job's files: stage-in from parents and URLs, stage-out (docs/data-movement.md).

One small module per scheme, chosen by :mod:`~balsam.platform.transfer.urls`:
:mod:`.local` (paths, ``file://``, ``local:``, 0.5's ``scp:``), :mod:`.rsync` (``rsync://`` and
``[USER@]HOST:PATH``), :mod:`.http` (``http(s)://`` downloads), :mod:`.globus`
(``globus://``, batched), behind :class:`~balsam.platform.transfer.dispatch.Transfers`, which
retries transient failures a bounded number of times. The module-level :func:`stage_in_url`
and :func:`stage_out` are what callers used before the package; each makes a short-lived
:class:`Transfers`.
"""

from __future__ import annotations

from pathlib import Path

from balsam.platform.transfer.dispatch import ADAPTERS, Transfers
from balsam.platform.transfer.errors import TransferError, TransientTransferError
from balsam.platform.transfer.local import (
    SCP_TIMEOUT_SECONDS,
    copy_item,
    copy_matching,
    local_path,
    patterns_of,
    scp,
)
from balsam.platform.transfer.urls import GRIDFTP_REFUSAL, SUPPORTED, adapter_name, is_host_path
from balsam.transfer_settings import TransferSettings

__all__ = [
    "ADAPTERS",
    "GRIDFTP_REFUSAL",
    "SCP_TIMEOUT_SECONDS",
    "SUPPORTED",
    "TransferError",
    "Transfers",
    "TransientTransferError",
    "adapter_name",
    "copy_item",
    "copy_matching",
    "is_host_path",
    "local_path",
    "patterns_of",
    "scp",
    "stage_in_url",
    "stage_out",
]


def stage_in_url(
    url: str, base: Path, dst_dir: Path, settings: TransferSettings | None = None
) -> list[Path]:
    """Bring the file or directory ``url`` names into ``dst_dir`` (relative paths from
    ``base``); returns what arrived."""
    transfers = Transfers(settings)
    try:
        return transfers.stage_in(url, base, dst_dir)
    finally:
        transfers.close()


def stage_out(
    src_dir: Path,
    patterns: list[str],
    url: str,
    base: Path,
    settings: TransferSettings | None = None,
) -> list[Path]:
    """Send the entries of ``src_dir`` matching ``patterns`` to ``url``."""
    transfers = Transfers(settings)
    try:
        return transfers.stage_out(src_dir, patterns, url, base)
    finally:
        transfers.close()
