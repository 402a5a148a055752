"""The service's processing launcher: staging, pre- and postprocessing off the compute nodes.

With ``service.processing`` set, ``balsam service`` keeps one ``balsam launcher
--processing-only`` running on its own host. That launcher claims every job with a step
before or after its run (READY and STAGED_IN jobs, and jobs left in RUN_DONE, RUN_ERROR,
RUN_TIMEOUT or POSTPROCESSED), does the step, and lets go of jobs that are ready to run; the
compute launchers, seeing the service alive, claim only those (see
:mod:`balsam.launcher.processing`). Each pass the service checks that its processing launcher
still runs and starts another if it exited (the log says with which code). The launcher stops
by itself when the service's process is gone (``--exit-with-pid``), SIGKILL included, and the
service stops it (SIGTERM, then SIGKILL) when it stops.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess

from balsam.config import Site
from balsam.platform.schedulers.base import balsam_entry_point

log = logging.getLogger(__name__)


class ProcessingLauncher:
    """One ``balsam launcher --processing-only`` child of the service, kept running."""

    def __init__(self, site: Site, wf_filter: str = "") -> None:
        self.site = site
        self.argv = [
            *balsam_entry_point(),
            "launcher",
            "--processing-only",
            "--exit-with-pid",
            str(os.getpid()),
        ]
        if wf_filter:
            self.argv += ["--wf-filter", wf_filter]
        self.proc: subprocess.Popen[bytes] | None = None
        #: How many times it was started (more than once: it exited and was started again).
        self.starts = 0

    @property
    def pid(self) -> int | None:
        """The running processing launcher's process id (None: none runs)."""
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def ensure(self) -> str:
        """Start the processing launcher if none runs; a line for the pass's report."""
        if self.proc is not None:
            code = self.proc.poll()
            if code is None:
                return f"processing launcher running (pid {self.proc.pid})"
            log.warning("the processing launcher (pid %d) exited with code %d", self.proc.pid, code)
        self._start()
        assert self.proc is not None
        return f"processing launcher started (pid {self.proc.pid})"

    def _start(self) -> None:
        self.site.log_dir.mkdir(parents=True, exist_ok=True)
        env = os.environ | {"BALSAM_DB_PATH": str(self.site.path)}
        with open(self.site.log_dir / "processing.out", "ab") as sink:
            self.proc = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=sink,
                env=env,
                cwd=self.site.path,
                start_new_session=True,
            )
        self.starts += 1
        log.info("started the processing launcher (pid %d)", self.proc.pid)

    def stop(self, grace: float) -> None:
        """SIGTERM (it ends its steps and hands the jobs back), SIGKILL after ``grace``."""
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            log.warning("the processing launcher (pid %d) did not stop: killing it", proc.pid)
            proc.kill()
            proc.wait()
        log.info("the processing launcher (pid %d) stopped", proc.pid)
