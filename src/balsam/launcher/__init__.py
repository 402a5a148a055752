"""The launcher: the pilot process that runs jobs on the nodes of one allocation.

Kept free of imports so ``from balsam.launcher import dag`` stays light. The pieces:

- ``runner``: the event loop and its life cycle, built from the bases ``claims`` (what and
  when to claim, when ``--consume-all`` is done), ``queue`` (waiting jobs, where each starts,
  runs queued at workers), ``nodework`` (which nodes take jobs, remote workers, unfit jobs) and
  ``jobflow`` (one job's steps);
- ``lease`` (the session lease, kill polling, recovering dead peers), ``updates`` (buffered
  state changes), ``placement`` (nodes, their shares, CPUs and GPUs), ``commands`` (argv and
  environment of a job's commands), ``staging``, ``logs``, ``options``;
- ``worker`` (the process that starts commands on a node), ``workers`` (the launcher's side of
  them), ``wire`` (their messages), ``children`` (processes reaped through pidfds);
- ``dag``: Balsam's job-side API.

See docs/launcher.md.
"""
