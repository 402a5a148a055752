"""The environment Balsam gives a job's processes, beside the job's own ``environ_vars``.

One definition for the launcher (which starts the processes) and for the API's
``job.get_envs()`` (Balsam 0.5's way for a script to ask what a job would be given).
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def balsam_variables(
    job_id: str,
    db_path: str,
    parent_ids: Sequence[str],
    threads_per_rank: int,
    launcher_nodes: int = 1,
) -> dict[str, str]:
    """``BALSAM_JOB_ID``, ``BALSAM_DB_PATH``, ``BALSAM_PARENT_IDS`` (a JSON list, as 0.5's
    text of it), ``BALSAM_LAUNCHER_NODES`` and ``OMP_NUM_THREADS``."""
    return {
        "BALSAM_JOB_ID": job_id,
        "BALSAM_DB_PATH": db_path,
        "BALSAM_PARENT_IDS": json.dumps(list(parent_ids)),
        "BALSAM_LAUNCHER_NODES": str(launcher_nodes),
        "OMP_NUM_THREADS": str(threads_per_rank),
    }


def handler_variables(error: bool, timeout: bool) -> dict[str, str]:
    """What tells a postprocess it runs as the error or timeout handler (0.5's variables)."""
    found = {}
    if error:
        found["BALSAM_JOB_ERROR"] = "TRUE"
    if timeout:
        found["BALSAM_JOB_TIMEOUT"] = "TRUE"
    return found
