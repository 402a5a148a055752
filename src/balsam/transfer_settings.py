"""The ``transfer`` section of ``settings.yml``: retries, time limits and Globus.

In ``settings.yml``::

    transfer:
      max_retries: 3
      retry_backoff_seconds: 2
      timeout_seconds: 3600
      globus_endpoint_id: 5e9f...            # this site's own Globus collection
      globus_client_id: 1b0d...              # a native app registered at app.globus.org
      globus_tokens_file: ~/.balsam/globus-tokens.json
      batch_window_seconds: 5

Read by :mod:`balsam.platform.transfer`; see docs/data-movement.md.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator

from balsam.settings_file import SETTINGS_CONFIG, SettingText

#: The longest transfer time limit a setting may give: a week.
MAX_TRANSFER_SECONDS = 7 * 24 * 3600.0
#: Globus ids are UUIDs (empty: not set).
UUID_PATTERN = r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})?$"


class TransferSettings(BaseModel):
    """How stage-in and stage-out move files that are not on this machine.

    ``max_retries``: how often a transfer that failed transiently (a refused or dropped
    connection, a time-out, an HTTP 5xx, rsync's network exit codes) is tried again, after
    ``retry_backoff_seconds`` doubling each time; a permanent failure (missing source, 404,
    permission) fails the job at once. ``timeout_seconds`` bounds each rsync or scp command
    and each HTTP download as a whole, ``io_timeout_seconds`` a transfer that stalls (no byte
    moves), ``connect_timeout_seconds`` each connection. ``ssh_options`` are added to the ssh
    command of rsync over ssh (``["-p", "2222"]``, ``["-F", "/path/ssh_config"]``). Globus:
    items asked for within ``batch_window_seconds`` of each other go in one Transfer task per
    endpoint pair, polled every ``globus_poll_seconds`` for at most ``globus_task_timeout_seconds``.
    """

    model_config = SETTINGS_CONFIG

    max_retries: int = Field(default=3, ge=0, le=100)
    retry_backoff_seconds: float = Field(default=2.0, ge=0, le=3600.0)
    timeout_seconds: float = Field(default=3600.0, gt=0, le=MAX_TRANSFER_SECONDS)
    connect_timeout_seconds: float = Field(default=30.0, gt=0, le=3600.0)
    io_timeout_seconds: float = Field(default=120.0, ge=1, le=3600.0)
    ssh_options: list[SettingText] = Field(default_factory=list, max_length=100)
    globus_endpoint_id: str = Field(default="", pattern=UUID_PATTERN)
    globus_client_id: str = Field(default="", pattern=UUID_PATTERN)
    globus_tokens_file: SettingText = "~/.balsam/globus-tokens.json"
    batch_window_seconds: float = Field(default=5.0, ge=0, le=3600.0)
    globus_poll_seconds: float = Field(default=10.0, gt=0, le=3600.0)
    globus_task_timeout_seconds: float = Field(default=86400.0, gt=0, le=MAX_TRANSFER_SECONDS)

    @field_validator("globus_tokens_file")
    @classmethod
    def _not_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a file (the Globus refresh tokens are kept there)")
        return value

    @property
    def tokens_path(self) -> Path:
        """The token file, ``~`` expanded."""
        return Path(self.globus_tokens_file).expanduser()
