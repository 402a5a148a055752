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

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic import ValidationError as PydanticValidationError

from balsam.errors import ConfigError, NotFound

SETTINGS_FILE = "settings.yml"
SQLITE_FILE = "balsam.db"


class DatabaseSettings(BaseModel):
    """Which database holds the workflow: embedded SQLite, an owned PostgreSQL, or a URL."""

    model_config = ConfigDict(extra="forbid")

    kind: Literal["sqlite", "postgres", "url"] = "sqlite"
    url: str = ""
    host: str = "127.0.0.1"
    port: int = Field(default=0, ge=0, le=65535)
    user: str = "postgres"
    name: str = "balsam"


class LauncherSettings(BaseModel):
    """How launchers behave.

    A launcher renews its lease every ``heartbeat_seconds``. The jobs of a launcher that
    stopped renewing go back to others within ``lease_seconds`` of its last renewal (while any
    launcher runs): others expire a lease ``heartbeat_seconds`` before that and check every
    ``heartbeat_seconds``. A launcher that cannot renew for ``lease_seconds - 2 x
    heartbeat_seconds`` stops its own jobs first, so a job never runs in two places.
    """

    model_config = ConfigDict(extra="forbid")

    lease_seconds: float = Field(default=60.0, gt=0)
    heartbeat_seconds: float = Field(default=10.0, gt=0)
    kill_poll_seconds: float = Field(default=2.0, gt=0)
    claim_batch: int = Field(default=256, ge=1)
    flush_interval_seconds: float = Field(default=0.25, gt=0)
    error_tail_lines: int = Field(default=10, ge=1)
    kill_grace_seconds: float = Field(default=10.0, ge=0)
    worker_start_seconds: float = Field(default=120.0, gt=0)

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

    model_config = ConfigDict(extra="forbid")

    scheduler: str = "local"
    mpi_launcher: str = "auto"
    mpi_launcher_args: list[str] = Field(default_factory=list)
    cpus_per_node: int = Field(default=0, ge=0)
    gpus_per_node: int = Field(default=0, ge=0)
    gpu_visible_env: str = Field(default="CUDA_VISIBLE_DEVICES", min_length=1)
    launcher_address: str = ""


class SiteSettings(BaseModel):
    """Everything in ``settings.yml``."""

    model_config = ConfigDict(extra="forbid")

    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    launcher: LauncherSettings = Field(default_factory=LauncherSettings)
    platform: PlatformSettings = Field(default_factory=PlatformSettings)


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
            return f"postgresql+psycopg://{db.user}@{db.host}:{db.port}/{db.name}"
        return db.url

    def job_dir(self, working_directory: str) -> Path:
        """Absolute path of a job's working directory."""
        return self.path / working_directory


def settings_path(path: Path) -> Path:
    """Where a site's settings live."""
    return path / SETTINGS_FILE


def load_settings(path: Path) -> SiteSettings:
    """Read and validate ``settings.yml``; a bad file is a ConfigError naming it."""
    file = settings_path(path)
    try:
        raw = yaml.safe_load(file.read_text()) or {}
    except FileNotFoundError:
        raise NotFound(f"{path} is not a Balsam workflow database (no {SETTINGS_FILE})") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read {file}: {exc}") from None
    try:
        return SiteSettings.model_validate(raw)
    except PydanticValidationError as exc:
        err = exc.errors()[0]
        where = ".".join(str(p) for p in err["loc"])
        raise ConfigError(f"{file}: {where}: {err['msg']}") from None


def save_settings(path: Path, settings: SiteSettings) -> None:
    """Write ``settings.yml`` atomically (a killed writer leaves the old file)."""
    file = settings_path(path)
    tmp = file.with_suffix(".yml.tmp")
    tmp.write_text(yaml.safe_dump(settings.model_dump(mode="json"), sort_keys=False))
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
