"""The Python API user scripts import: jobs and apps with Django-style managers.

``Job.objects.filter(workflow="test", state__in=["RUN_ERROR", "FAILED"])`` and friends work on
whichever Backend is current: by default the active workflow database (``BALSAM_DB_PATH``),
opened on first use; :func:`use_backend` injects another. Balsam 0.x names live in
:mod:`balsam.core.models` (``BalsamJob``, ``ApplicationDefinition``) and
:mod:`balsam.launcher.dag`. :func:`campaign_report` turns the event log into analytics tables
(:mod:`balsam.api.analytics`).
"""

from __future__ import annotations

from balsam.api.analytics import CampaignReport, campaign_report
from balsam.api.apps import App, AppQuerySet
from balsam.api.context import (
    BackendScope,
    close_default_backend,
    get_backend,
    get_site,
    use_backend,
)
from balsam.api.jobs import Job
from balsam.api.lookups import UnknownField
from balsam.api.query import JobQuerySet
from balsam.api.waiting import ALL_COMPLETED, FIRST_COMPLETED, DoneAndNotDone

__all__ = [
    "ALL_COMPLETED",
    "FIRST_COMPLETED",
    "App",
    "AppQuerySet",
    "BackendScope",
    "CampaignReport",
    "DoneAndNotDone",
    "Job",
    "JobQuerySet",
    "UnknownField",
    "campaign_report",
    "close_default_backend",
    "get_backend",
    "get_site",
    "use_backend",
]
