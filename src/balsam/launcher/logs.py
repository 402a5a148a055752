"""The launcher's log file: ``<site>/log/launcher_<host>_<pid>.log``.

Every line carries the host, the launcher's pid and the job it is about (``-`` when none), so
the logs of many launchers on many nodes can be merged and grepped by job id. Only the
``balsam launcher`` entry point calls :func:`configure`; modules log through
``logging.getLogger(__name__)`` and pass ``extra=job_extra(job_id)``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from balsam.errors import ConfigError

FORMAT = "%(asctime)s %(host)s:%(process)d %(levelname)s [%(job)s] %(name)s: %(message)s"


class _Context(logging.Filter):
    """Adds ``host`` and a default ``job`` to every record."""

    def __init__(self, host: str) -> None:
        super().__init__()
        self.host = host

    def filter(self, record: logging.LogRecord) -> bool:
        record.host = self.host
        if not hasattr(record, "job"):
            record.job = "-"
        return True


def job_extra(job_id: str) -> dict[str, str]:
    """``extra=`` for a log call about one job (its short id)."""
    return {"job": job_id[:8]}


def log_path(log_dir: Path, host: str, pid: int | None = None) -> Path:
    """Where a launcher on ``host`` with ``pid`` writes its log."""
    return log_dir / f"launcher_{host}_{pid if pid is not None else os.getpid()}.log"


class BufferedFileHandler(logging.FileHandler):
    """A log file written in blocks rather than a write per line.

    A busy launcher logs a few lines per job; one write each would cost more than the job.
    Lines are written when a warning or error comes, when :func:`flush` is called (the
    launcher's loop does, before it sleeps and at least every ``FLUSH_SECONDS``), and at close.
    """

    #: Lines lost while the file could not be written (a full disk, a quota), since when.
    lost_lines = 0
    failing_since: float | None = None

    def flush(self) -> None:
        """Do nothing: StreamHandler calls this after every record."""

    def emit(self, record: logging.LogRecord) -> None:
        """Buffer ``record``; write at once from WARNING up."""
        super().emit(record)
        if record.levelno >= logging.WARNING:
            self.write_out()

    def handleError(self, record: logging.LogRecord) -> None:
        """A line that cannot be written is counted, never raised: a full disk must not stop
        the launcher, whose jobs may be what frees the space."""
        self.write_failed(1)

    def write_failed(self, lines: int) -> None:
        """Count ``lines`` lost to a failed write; warn once per failing spell."""
        self.lost_lines += lines
        if self.failing_since is None:
            self.failing_since = time.time()
            _warn_stderr(f"cannot write the launcher log {self.baseFilename}: carrying on")

    def write_out(self) -> None:
        """Write what is buffered (kept, and tried again later, if it cannot be)."""
        self.acquire()
        try:
            if self.stream is not None:
                self.stream.flush()
        except OSError:
            self.write_failed(0)
            return
        finally:
            self.release()
        if self.failing_since is not None:
            self._say_what_was_lost()

    def _say_what_was_lost(self) -> None:
        since = time.strftime("%H:%M:%S", time.localtime(self.failing_since))
        lost, self.lost_lines, self.failing_since = self.lost_lines, 0, None
        logging.getLogger(__name__).warning(
            "the log could not be written from %s until now: %d line(s) lost", since, lost
        )


class JobLines:
    """One module's per-job progress lines, written straight to the launcher's log file.

    A launcher at a thousand jobs a second writes two lines per job; building a
    ``LogRecord`` (caller lookup, filters, formatting) for each cost about a twentieth of its
    time. These lines are formatted here, in :data:`FORMAT`'s layout, and appended to the
    buffered file. Without a launcher log file (a launcher run in-process by a test or a
    script) they go through ``logging`` as usual. They are INFO lines: a level above INFO
    silences them.
    """

    def __init__(self, name: str) -> None:
        self.logger = logging.getLogger(name)
        self.name = name

    def info(self, job_id: str, text: str) -> None:
        """Log ``text`` about the job ``job_id``."""
        target = _job_target[0]
        if target is None:
            self.logger.info(text, extra=job_extra(job_id))
        elif self.logger.isEnabledFor(logging.INFO):
            target.write_job_line(self.name, job_id[:8], text)


class _JobLineTarget:
    """The file handler job lines go to, and the fixed part of their layout."""

    def __init__(self, handler: BufferedFileHandler, host: str) -> None:
        self.handler = handler
        self.origin = f"{host}:{os.getpid()} INFO"
        self.second = -1
        self.stamp = ""

    def write_job_line(self, name: str, job: str, text: str) -> None:
        now = time.time()
        second = int(now)
        if second != self.second:
            # logging's asctime layout; the date part changes once a second.
            self.second, self.stamp = (
                second,
                time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(now)),
            )
        millis = int((now - second) * 1000)
        line = f"{self.stamp},{millis:03d} {self.origin} [{job}] {name}: {text}\n"
        stream = self.handler.stream
        if stream is not None:
            with self.handler.lock or contextlib.nullcontext():
                try:
                    stream.write(line)
                except OSError:
                    # A full buffer that cannot be written out: this line is lost, counted.
                    self.handler.write_failed(1)


_job_target: list[_JobLineTarget | None] = [None]

#: Longest a buffered line waits while the launcher is busy.
FLUSH_SECONDS = 0.5
_last_flush = [0.0]


def _warn_stderr(text: str) -> None:
    with contextlib.suppress(OSError, ValueError):
        sys.stderr.write(f"balsam: warning: {text}\n")
        sys.stderr.flush()


def flush(now: float, force: bool = False) -> None:
    """Write the buffered lines of every launcher log file (at most every FLUSH_SECONDS)."""
    if not force and now - _last_flush[0] < FLUSH_SECONDS:
        return
    _last_flush[0] = now
    for handler in logging.getLogger("balsam").handlers:
        if isinstance(handler, BufferedFileHandler):
            handler.write_out()


def configure(log_dir: Path, host: str, level: int = logging.INFO) -> Path:
    """Send ``balsam`` log records to this launcher's file; returns its path."""
    path = log_path(log_dir, host)
    try:
        log_dir.mkdir(parents=True, exist_ok=True)
        handler = BufferedFileHandler(path, encoding="utf-8")
    except OSError as exc:
        # A read-only or missing log directory is the user's to fix: one line, no traceback.
        raise ConfigError(f"cannot write the launcher log {path}: {exc.strerror or exc}") from None
    errors = logging.StreamHandler()
    errors.setLevel(logging.WARNING)
    for each in (handler, errors):
        each.addFilter(_Context(host))
        each.setFormatter(logging.Formatter(FORMAT))
    logger = logging.getLogger("balsam")
    logger.addHandler(handler)
    logger.addHandler(errors)
    _job_target[0] = _JobLineTarget(handler, host)
    logger.setLevel(level)
    # Progress goes to the file; only warnings reach the terminal (through our own handler).
    logger.propagate = False
    return path


def close(path: Path) -> None:
    """Detach the handlers :func:`configure` added for ``path`` (for in-process runs, tests)."""
    logger = logging.getLogger("balsam")
    for handler in list(logger.handlers):
        if any(isinstance(f, _Context) for f in handler.filters):
            if isinstance(handler, logging.FileHandler) and Path(handler.baseFilename) != path:
                continue
            logger.removeHandler(handler)
            handler.close()
            target = _job_target[0]
            if target is not None and target.handler is handler:
                _job_target[0] = None
    logger.propagate = True
