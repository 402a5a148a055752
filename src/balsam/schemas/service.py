"""The service's lock: which ``balsam service`` runs for a workflow database, and its report."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict

#: The one lock name a workflow database's service takes.
SERVICE_LOCK = "service"


class ServiceLockOut(BaseModel):
    """A held lock: its holder (a random token), where it runs, until when it is held.

    ``status`` is the holder's last report (JSON text, see ``balsam.site.service``);
    ``stop_requested`` asks the holder to stop (``balsam service stop`` from any host).
    """

    model_config = ConfigDict(from_attributes=True)

    name: str
    holder: str
    hostname: str
    pid: int
    acquired_at: datetime
    heartbeat: datetime
    expires_at: datetime
    stop_requested: bool
    status: str
