"""Settings of a workflow database (``settings.yml`` in its directory) and where sites live.

Nothing is built at import time: entry points call :func:`load_site` and pass the result down.
``BALSAM_DB_PATH`` names the active workflow database; ``BALSAM_HOME`` (default ``~/.balsam``)
holds the list of known databases used by ``balsam which`` and ``balsamactivate NAME``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    BaseModel,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from balsam import settings_file
from balsam.batch_settings import QueueSettings, ServiceSettings
from balsam.errors import ConfigError, NotFound
from balsam.settings_file import CONTROL, SETTINGS_CONFIG, SETTINGS_FILE, SettingText
from balsam.transfer_settings import TransferSettings

SQLITE_FILE = "balsam.db"
#: Database URL schemes Balsam opens (``postgresql`` is driven by psycopg 3).
DATABASE_URL_SCHEMES = ("postgresql", "postgresql+psycopg", "sqlite")
#: The longest duration a setting may give: a week, longer than any batch allocation (and
#: small enough for every timer and ``select`` the launcher hands it to).
MAX_SETTING_SECONDS = 7 * 24 * 3600.0
#: Bounds of the per-node counts and batch sizes: far beyond any machine, far below overflow.
MAX_CPUS_PER_NODE = 65_536
MAX_GPUS_PER_NODE = 1_024
MAX_BATCH = 10_000


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is not a database URL Balsam can open, or None (never repeats the URL,
    which may hold a password)."""
    supported = ", ".join(DATABASE_URL_SCHEMES)
    found = CONTROL.search(url)
    if found:
        return f"holds the control character {found.group()!r}"
    if not url.strip():
        return "is empty: give a database URL such as postgresql://USER@HOST:PORT/DBNAME"
    scheme, sep, rest = url.partition("://")
    if not sep:
        return f"is not a URL (expected SCHEME://...; supported schemes: {supported})"
    if scheme not in DATABASE_URL_SCHEMES:
        return f"has the unsupported scheme {scheme!r} (supported: {supported})"
    if scheme.startswith("postgresql"):
        if not rest.strip("/"):
            return "names no server or database (expected postgresql://USER@HOST:PORT/DBNAME)"
        if not _port_readable(url):
            return "has a port that is not a number from 0 to 65535"
    return None


def _port_readable(url: str) -> bool:
    try:
        urlsplit(url).port  # noqa: B018 - reading it is the check: a bad port raises
    except ValueError:
        return False
    return True


class DatabaseSettings(BaseModel):
    """Which database holds the workflow: embedded SQLite, an owned PostgreSQL, or a URL.

    With ``kind: url`` the URL must use one of :data:`DATABASE_URL_SCHEMES`.
    """

    model_config = SETTINGS_CONFIG

    kind: Literal["sqlite", "postgres", "url"] = "sqlite"
    # Checked even when absent: ``kind: url`` with no URL is a broken file, not a default.
    url: str = Field(default="", validate_default=True)
    host: SettingText = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    user: SettingText = "postgres"
    name: SettingText = "balsam"
    #: Where an owned server listens (PostgreSQL's ``listen_addresses``; see docs/security.md).
    listen_addresses: SettingText = "127.0.0.1"

    @field_validator("url")
    @classmethod
    def _url_can_be_opened(cls, url: str, info: ValidationInfo) -> str:
        # Not a ValueError: pydantic would print the URL, password and all, in its message.
        if info.data.get("kind") == "url":
            problem = database_url_problem(url)
            if problem:
                raise _RefusedURL(f"the database URL {problem}")
        return url


class _RefusedURL(ConfigError):
    """A ``database.url`` Balsam cannot open (raised through pydantic, which keeps it)."""


class LauncherSettings(BaseModel):
    """How launchers behave.

    A launcher renews its lease every ``heartbeat_seconds``. The jobs of a launcher that
    stopped renewing go back to others within ``lease_seconds`` of its last renewal (while any
    launcher runs): others expire a lease ``heartbeat_seconds`` before that and check every
    ``heartbeat_seconds``. A launcher that cannot renew for ``lease_seconds - 2 x
    heartbeat_seconds`` stops its own jobs first, so a job never runs in two places.
    Durations are finite and at most :data:`MAX_SETTING_SECONDS`.
    """

    model_config = SETTINGS_CONFIG

    lease_seconds: float = Field(default=60.0, gt=0, le=MAX_SETTING_SECONDS)
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=MAX_SETTING_SECONDS)
    kill_poll_seconds: float = Field(default=2.0, gt=0, le=MAX_SETTING_SECONDS)
    claim_batch: int = Field(default=256, ge=1, le=MAX_BATCH)
    flush_interval_seconds: float = Field(default=0.25, gt=0, le=MAX_SETTING_SECONDS)
    error_tail_lines: int = Field(default=10, ge=1, le=MAX_BATCH)
    kill_grace_seconds: float = Field(default=10.0, ge=0, le=MAX_SETTING_SECONDS)
    #: How long a run killed by a signal the launcher did not send waits before it is
    #: recorded RUN_ERROR: if the launcher is signalled to stop meanwhile (scancel, the end
    #: of the allocation), the run is a RUN_TIMEOUT instead, to be rerun.
    outside_signal_wait_seconds: float = Field(default=3.0, ge=0, le=MAX_SETTING_SECONDS)
    worker_start_seconds: float = Field(default=120.0, gt=0, le=MAX_SETTING_SECONDS)

    @model_validator(mode="after")
    def _lease_outlasts_heartbeats(self) -> LauncherSettings:
        if self.lease_seconds < 3 * self.heartbeat_seconds:
            raise ValueError(
                f"lease_seconds ({self.lease_seconds:g}) must be at least 3 x heartbeat_seconds "
                f"({self.heartbeat_seconds:g})"
            )
        return self

    @property
    def expire_after_seconds(self) -> float:
        """Heartbeat age at which other launchers take a lease's jobs back."""
        return self.lease_seconds - self.heartbeat_seconds

    @property
    def fence_after_seconds(self) -> float:
        """Time without a renewal after which a launcher stops its own jobs."""
        return self.lease_seconds - 2 * self.heartbeat_seconds


class PlatformSettings(BaseModel):
    """The machine: scheduler, MPI launcher, node sizes (0 means detect on the node).

    ``mpi_launcher_args`` go on every MPI launch right after the program (e.g. ``--mpi=pmi2``
    for srun where the site's MpiDefault does not match the MPI the apps use).
    ``launcher_address`` is where serial-mode workers on other nodes reach the launcher
    (empty: the address of the launcher host's name).
    """

    model_config = SETTINGS_CONFIG

    scheduler: SettingText = "local"
    mpi_launcher: SettingText = "auto"
    mpi_launcher_args: list[SettingText] = Field(default_factory=list)
    cpus_per_node: int = Field(default=0, ge=0, le=MAX_CPUS_PER_NODE)
    gpus_per_node: int = Field(default=0, ge=0, le=MAX_GPUS_PER_NODE)
    gpu_visible_env: str = Field(
        default="CUDA_VISIBLE_DEVICES", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    launcher_address: SettingText = ""
    #: A batch-script template of the site's own (a path, relative to the workflow directory;
    #: empty: the built-in script). See docs/configuration.md for its ``${...}`` fields.
    batch_script_template: SettingText = ""
    #: How runs of apps that name a container image are started (docs/containers.md).
    container_runtime: Literal["apptainer", "singularity", "podman"] = "apptainer"
    #: More bind mounts (``SRC[:DST[:OPTS]]``) besides the job's working directory.
    container_binds: list[SettingText] = Field(default_factory=list, max_length=1_000)
    #: Flags for the runtime program itself, before ``exec``/``run`` (podman's ``--root``).
    container_runtime_args: list[SettingText] = Field(default_factory=list, max_length=1_000)
    #: Flags of ``exec``/``run``, right before the image (``--pull=never``, ``--contain``).
    container_args: list[SettingText] = Field(default_factory=list, max_length=1_000)
    #: Apptainer/Singularity ``--cleanenv``: only the job's variables reach the container.
    container_cleanenv: bool = False
    #: GPU flag for jobs that ask for GPUs: ``auto`` follows ``gpu_visible_env``.
    container_gpu: Literal["auto", "nv", "rocm", "none"] = "auto"


class SiteSettings(BaseModel):
    """Everything in ``settings.yml``.

    ``projects`` and ``queues`` are what ``balsam submit-launch`` and the service may ask the
    batch scheduler for; when a site lists none, any is passed on to the scheduler.
    """

    model_config = SETTINGS_CONFIG

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)
    platform: PlatformSettings = Field(default_factory=PlatformSettings)
    projects: list[SettingText] = Field(default_factory=list, max_length=1_000)
    queues: dict[SettingText, QueueSettings] = Field(default_factory=dict, max_length=1_000)
    service: ServiceSettings = Field(default_factory=ServiceSettings)
    transfer: TransferSettings = Field(default_factory=TransferSettings)


@dataclass(frozen=True)
class Site:
    """A workflow database directory and its settings."""

    path: Path
    settings: SiteSettings

    @property
    def name(self) -> str:
        """The directory's base name (what ``balsamactivate NAME`` matches)."""
        return self.path.name

    @property
    def data_dir(self) -> Path:
        """Parent of the jobs' working directories."""
        return self.path / "data"

    @property
    def log_dir(self) -> Path:
        """Launcher and service logs."""
        return self.path / "log"

    @property
    def scripts_dir(self) -> Path:
        """Batch scripts written by ``submit-launch``."""
        return self.path / "qsubmit"

    @property
    def pg_dir(self) -> Path:
        """The owned PostgreSQL cluster's directory."""
        return self.path / "balsamdb"

    def database_url(self) -> str:
        """The SQLAlchemy URL of this site's database."""
        db = self.settings.database
        if db.kind == "sqlite":
            return f"sqlite:///{self.path / SQLITE_FILE}"
        if db.kind == "postgres":
            # The password is in a 0600 libpq passfile of the site (balsam.store.pgcluster).
            passfile = quote(str(self.pg_dir / "postgres.pgpass"))
            where = f"{db.user}@{db.host}:{db.port}/{db.name}"
            return f"postgresql+psycopg://{where}?passfile={passfile}"
        return db.url

    def job_dir(self, working_directory: str) -> Path:
        """Absolute path of a job's working directory."""
        return self.path / working_directory


def settings_path(path: Path) -> Path:
    """Where a site's settings live."""
    return path / SETTINGS_FILE


def load_settings(path: Path) -> SiteSettings:
    """Read and validate ``settings.yml``.

    A broken file is a :class:`ConfigError` of one line naming the file, the line (when there
    is one) and the key path, e.g. ``.../settings.yml, line 12: launcher.heartbeat_seconds:
    input should be a finite number (got nan)``. Refused: bytes that are not UTF-8, YAML
    errors, a top level that is not a mapping, an empty file, a key given twice, unknown keys,
    wrong types (no ``yes`` for a number), non-finite or out-of-range numbers, and a database
    URL Balsam cannot open. The file is never changed.
    """
    file = settings_path(path)
    text = settings_file.read_settings_text(path, file)
    data, lines = settings_file.parse_settings(file, text, SiteSettings)
    try:
        return SiteSettings.model_validate(data, strict=True)
    except PydanticValidationError as exc:
        problem = settings_file.validation_problem(file, exc, lines, SiteSettings)
        raise ConfigError(settings_file.one_line(problem)) from None
    except _RefusedURL as exc:
        loc = ("database", "url")
        where = settings_file.at(file, settings_file.line_of(loc, lines))
        problem = f"{where}: {settings_file.key_path(loc)}: {exc}"
        raise ConfigError(settings_file.one_line(problem)) from None


def save_settings(path: Path, settings: SiteSettings) -> None:
    """Write ``settings.yml`` atomically (a killed writer leaves the old file).

    A file holding a password (a database URL with one) is created 0600, so it is never
    readable by others, not even for a moment; any other follows the umask.
    """
    file = settings_path(path)
    tmp = file.with_suffix(".yml.tmp")
    url = settings.database.url
    try:
        parts = urlsplit(url)
        secret = bool(parts.password) or "password=" in parts.query
    except ValueError:
        secret = bool(url)  # a URL that does not parse may still hold one
    # A stale temporary file would keep its old mode through O_TRUNC: start from none.
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600 if secret else 0o666)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
    os.replace(tmp, file)


def load_site(path: str | Path | None = None) -> Site:
    """The site at ``path``, or the active one (``BALSAM_DB_PATH``)."""
    if path is None:
        path = os.environ.get("BALSAM_DB_PATH")
        if not path:
            raise ConfigError(
                "no active workflow database: "
                "run 'source balsamactivate NAME' or set BALSAM_DB_PATH"
            )
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_dir():
        raise NotFound(f"workflow database {path} does not exist")
    return Site(path=resolved, settings=load_settings(resolved))


def balsam_home() -> Path:
    """Per-user Balsam directory (``BALSAM_HOME`` or ``~/.balsam``)."""
    return Path(os.environ.get("BALSAM_HOME") or Path.home() / ".balsam")


def _known_file() -> Path:
    return balsam_home() / "databases.txt"


def known_sites() -> list[Path]:
    """Workflow databases this user has made or activated, existing ones only."""
    try:
        lines = _known_file().read_text().splitlines()
    except FileNotFoundError:
        return []
    paths = [Path(line) for line in dict.fromkeys(x.strip() for x in lines) if line]
    return [p for p in paths if settings_path(p).is_file()]


def remember_site(path: Path) -> None:
    """Add ``path`` to the known databases."""
    known = known_sites()
    if path in known:
        return
    balsam_home().mkdir(parents=True, exist_ok=True)
    with _known_file().open("a") as fh:
        fh.write(f"{path}\n")


def resolve_site_path(name_or_path: str) -> Path:
    """A known database by name, or a path; NotFound/Ambiguous otherwise."""
    from balsam.errors import Ambiguous

    candidate = Path(name_or_path).expanduser()
    if settings_path(candidate).is_file():
        return candidate.resolve()
    matches = [p for p in known_sites() if p.name == name_or_path]
    if not matches:
        raise NotFound(f"no workflow database named {name_or_path!r} (see 'balsam which --list')")
    if len(matches) > 1:
        listed = ", ".join(str(m) for m in matches)
        raise Ambiguous(f"{name_or_path!r} names several workflow databases: {listed}; give a path")
    return matches[0]
