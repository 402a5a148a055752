"""A driver script that waits: run a first round of jobs, then a second round built from it.

Run it inside an active workflow database (``source balsamactivate NAME``) while a launcher
runs the ``driver-demo`` workflow, for example in another terminal::

    balsam launcher --wf-filter driver-demo --job-mode serial

It adds four "square" jobs, waits for each as it ends, reads its output, then adds one "sum"
job fed by the results and waits for it with a timeout. Exit status: 0 when everything
finished, 1 when a job failed or the wait timed out.
"""

from __future__ import annotations

import sys

from balsam import JobState
from balsam.api import ALL_COMPLETED, App, Job

WORKFLOW = "driver-demo"


def main() -> int:
    """Two rounds of jobs, each waited for; the exit status of the script."""
    if not App.objects.filter(name="shell").exists():
        App(name="shell", executable="/bin/sh").save()
    squares = [
        Job(
            name=f"square{n}",
            workflow=WORKFLOW,
            application="shell",
            args=f"-c 'echo $(({n} * {n}))'",
            node_packing_count=4,
        )
        for n in range(1, 5)
    ]
    Job.objects.bulk_create(squares)

    # As each square ends (in whatever order), read what it printed.
    results = []
    for job in Job.objects.as_completed(squares, timeout=300):
        if job.state is not JobState.JOB_FINISHED:
            print(f"{job.name} ended {job.state}", file=sys.stderr)
            return 1
        value = int(job.read_file_in_workdir(f"{job.name}.out"))
        print(f"{job.name} -> {value}")
        results.append(value)

    total = Job(
        name="sum",
        workflow=WORKFLOW,
        application="shell",
        args=f"-c 'echo $(({' + '.join(map(str, results))}))'",
    )
    total.save()
    done, not_done = Job.objects.wait([total], timeout=300, return_when=ALL_COMPLETED)
    if not_done or done[0].state is not JobState.JOB_FINISHED:
        print("the sum did not finish in time", file=sys.stderr)
        return 1
    print(f"sum of squares: {int(total.read_file_in_workdir('sum.out'))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
