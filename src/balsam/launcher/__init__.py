"""The launcher: the pilot process that runs jobs on the nodes of one allocation.

Kept free of imports so ``from balsam.launcher import dag`` stays light. The pieces:
``options`` (what the user asked for), ``placement`` (nodes and their free shares),
``children`` (child processes reaped through pidfds), ``commands`` (argv and environment of a
job's steps), ``staging`` (stage-in/out), ``updates`` (buffered state changes), ``logs``,
``jobflow`` (one job's steps) and ``runner`` (the event loop that ties them together).
See docs/launcher.md.
"""
