"""Analytics from the event log: throughput, node utilization, time in state, errors, progress.

    from balsam.api.analytics import campaign_report
    report = campaign_report(workflow="sweep", since=datetime(2024, 5, 1, tzinfo=UTC))
    report.utilization.rows()           # list of UtilizationRow
    report.throughput.to_dataframe()    # with pandas installed

``balsam report`` writes the same tables as plots and a text summary (docs/report.md).
"""

from __future__ import annotations

from balsam.api.analytics.report import CampaignReport, campaign_report
from balsam.api.analytics.summary import summary_text
from balsam.api.analytics.tables import (
    AppErrorRow,
    ErrorCauseRow,
    StateTimeRow,
    Table,
    ThroughputRow,
    UtilizationRow,
    WorkflowRow,
    WorkflowStateRow,
)

__all__ = [
    "AppErrorRow",
    "CampaignReport",
    "ErrorCauseRow",
    "StateTimeRow",
    "Table",
    "ThroughputRow",
    "UtilizationRow",
    "WorkflowRow",
    "WorkflowStateRow",
    "campaign_report",
    "summary_text",
]
