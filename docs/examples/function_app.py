"""Python function apps: fan calls out as jobs, gather what they return, see what they raise.

Run it inside an active workflow database (``source balsamactivate NAME``) while a launcher
runs the ``functions-demo`` workflow, for example in another terminal::

    balsam launcher --wf-filter functions-demo --job-mode serial

It registers the functions of ``function_tasks.py`` (beside this script) as apps, runs four
``simulate`` calls as jobs and prints what each returned, then a ``summarize`` job that waits
for all four, then a call that raises, whose remote exception it catches. The jobs find the
module through ``PYTHONPATH`` in their environment. Exit status: 0 when all went as described.
"""

from __future__ import annotations

import sys
from pathlib import Path

from balsam.api import Job
from balsam.errors import RemoteError

HERE = Path(__file__).resolve().parent
# This script imports the tasks to name them; the jobs import them through their PYTHONPATH.
sys.path.insert(0, str(HERE))
import function_tasks  # noqa: E402

WORKFLOW = "functions-demo"
JOB_ENV = {"PYTHONPATH": str(HERE)}


def main() -> int:
    """Three rounds of calls, each waited for; the exit status of the script."""
    sims = [
        Job.calling(
            function_tasks.simulate,
            args=[n],
            kwargs={"steps": 10},
            name=f"sim{n}",
            workflow=WORKFLOW,
            environ_vars=JOB_ENV,
            node_packing_count=4,
        )
        for n in range(1, 5)
    ]
    Job.objects.bulk_create(sims)
    results = [job.result(timeout=300) for job in sims]
    for job, value in zip(sims, results, strict=True):
        print(f"{job.name} -> {value['energy']}")

    # A job that waits for the four; its argument is what they returned.
    summary = Job.calling(
        function_tasks.summarize,
        args=[results],
        name="summary",
        workflow=WORKFLOW,
        environ_vars=JOB_ENV,
    )
    summary.set_parents(sims)
    summary.save()
    print(f"total energy: {summary.result(timeout=300)}")

    # The function raises in the job's process: result() raises it here, as text.
    bad = Job.calling(
        function_tasks.simulate, args=[-1], name="bad", workflow=WORKFLOW, environ_vars=JOB_ENV
    )
    bad.save()
    try:
        bad.result(timeout=300)
    except RemoteError as exc:
        print(f"bad raised {exc.remote_type}: {exc.remote_message}")
        print(exc.remote_traceback.strip().splitlines()[-2].strip())
        return 0
    print("bad did not raise", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
