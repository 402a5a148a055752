"""Settings of a workflow database (``settings.yml`` in its directory) and where sites live.

Nothing is built at import time: entry points call :func:`load_site` and pass the result down.
``BALSAM_DB_PATH`` names the active workflow database; ``BALSAM_HOME`` (default ``~/.balsam``)
holds the list of known databases used by ``balsam which`` and ``balsamactivate NAME``.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlsplit

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic import ValidationError as PydanticValidationError

from balsam.errors import ConfigError, NotFound

SETTINGS_FILE = "settings.yml"
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
#: The largest settings file read: ``balsam init`` writes under 1 KiB.
MAX_SETTINGS_BYTES = 1 << 20

# C0 and C1 controls, DEL, and lone surrogates (undecodable bytes): nothing a setting needs, and
# each one breaks a URL, an environment block or a command line it is passed to.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def _plain_text(value: str) -> str:
    """A setting's text, refused when it holds a control character or undecodable bytes."""
    found = _CONTROL.search(value)
    if found:
        raise ValueError(f"holds the control character {found.group()!r}")
    return value


#: Text in ``settings.yml``: one line, printable.
SettingText = Annotated[str, AfterValidator(_plain_text)]
#: Every settings model: unknown keys and non-finite numbers are refused.
_SETTINGS_CONFIG = ConfigDict(extra="forbid", allow_inf_nan=False)


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is not a database URL Balsam can open, or None (never repeats the URL,
    which may hold a password)."""
    supported = ", ".join(DATABASE_URL_SCHEMES)
    found = _CONTROL.search(url)
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

    model_config = _SETTINGS_CONFIG

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

    model_config = _SETTINGS_CONFIG

    lease_seconds: float = Field(default=60.0, gt=0, le=MAX_SETTING_SECONDS)
    heartbeat_seconds: float = Field(default=10.0, gt=0, le=MAX_SETTING_SECONDS)
    kill_poll_seconds: float = Field(default=2.0, gt=0, le=MAX_SETTING_SECONDS)
    claim_batch: int = Field(default=256, ge=1, le=MAX_BATCH)
    flush_interval_seconds: float = Field(default=0.25, gt=0, le=MAX_SETTING_SECONDS)
    error_tail_lines: int = Field(default=10, ge=1, le=MAX_BATCH)
    kill_grace_seconds: float = Field(default=10.0, ge=0, le=MAX_SETTING_SECONDS)
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

    model_config = _SETTINGS_CONFIG

    scheduler: SettingText = "local"
    mpi_launcher: SettingText = "auto"
    mpi_launcher_args: list[SettingText] = Field(default_factory=list)
    cpus_per_node: int = Field(default=0, ge=0, le=MAX_CPUS_PER_NODE)
    gpus_per_node: int = Field(default=0, ge=0, le=MAX_GPUS_PER_NODE)
    gpu_visible_env: str = Field(
        default="CUDA_VISIBLE_DEVICES", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$"
    )
    launcher_address: SettingText = ""


class SiteSettings(BaseModel):
    """Everything in ``settings.yml``."""

    model_config = _SETTINGS_CONFIG

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
    text = _read_settings_text(path, file)
    data, lines = _parse_settings(file, text)
    try:
        return SiteSettings.model_validate(data, strict=True)
    except PydanticValidationError as exc:
        raise ConfigError(_one_line(_validation_problem(file, exc, lines))) from None
    except _RefusedURL as exc:
        loc = ("database", "url")
        where = _at(file, _line_of(loc, lines))
        raise ConfigError(_one_line(f"{where}: {_key_path(loc)}: {exc}")) from None


# A key path in the file: section, key, list index.
_Loc = tuple[str | int, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


class _SettingsLoader(yaml.SafeLoader):
    """PyYAML's safe loader, reading ``1e3`` (YAML 1.2 style, no dot) as the number it looks like.

    YAML 1.1 makes ``1e3`` a string, which a number field would refuse as "not a number".
    """


_SettingsLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _read_settings_text(path: Path, file: Path) -> str:
    """The file's text; NotFound when there is none, ConfigError when it is not UTF-8 text."""
    try:
        with file.open("rb") as fh:
            data = fh.read(MAX_SETTINGS_BYTES + 1)
    except FileNotFoundError:
        raise NotFound(f"{path} is not a Balsam workflow database (no {SETTINGS_FILE})") from None
    except OSError as exc:
        raise ConfigError(_one_line(f"cannot read {file}: {exc.strerror or exc}")) from None
    if len(data) > MAX_SETTINGS_BYTES:
        raise ConfigError(_one_line(f"{file}: larger than 1 MiB: not a Balsam settings file"))
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        byte = data[exc.start]
        raise ConfigError(
            _one_line(f"{file}, line {line}: not UTF-8 text (byte 0x{byte:02x})")
        ) from None


def _parse_settings(file: Path, text: str) -> tuple[dict[str, Any], dict[_Loc, int]]:
    """The file's mapping and the line of each key path in it."""
    try:
        node, data = _compose(text)
        lines = _key_lines(file, node) if node is not None else {}
    except yaml.YAMLError as exc:
        raise ConfigError(_one_line(_yaml_problem(file, text, exc))) from None
    except RecursionError:
        raise ConfigError(_one_line(f"{file}: nested too deeply for a settings file")) from None
    if node is None or data is None:
        raise ConfigError(_one_line(f"{file}: is empty ('balsam init' writes every section)"))
    if not isinstance(data, dict):
        kind = _KINDS.get(type(data), type(data).__name__)
        sections = ", ".join(SiteSettings.model_fields)
        raise ConfigError(
            _one_line(
                f"{file}, line {node.start_mark.line + 1}: the top level is {kind}, not a "
                f"mapping of sections ({sections})"
            )
        )
    # "launcher:" with every key commented out is a section left at its defaults.
    known = SiteSettings.model_fields
    return {k: {} if v is None and k in known else v for k, v in data.items()}, lines


# What a YAML top level that is not a mapping is, in a user's words.
_KINDS: dict[type, str] = {list: "a list", str: "text", int: "a number", float: "a number"}


def _compose(text: str) -> tuple[yaml.Node | None, Any]:
    """The document's node tree and its Python value (YAMLError when it is not YAML)."""
    loader = _SettingsLoader(text)
    try:
        node = loader.get_single_node()
        return node, loader.construct_document(node) if node is not None else None
    finally:
        loader.dispose()


def _key_lines(file: Path, root: yaml.Node) -> dict[_Loc, int]:
    """The 1-based line of every key and list item under ``root``; a key given twice in one
    mapping is a ConfigError (YAML would keep the last one silently)."""
    lines: dict[_Loc, int] = {}
    # Each node once: aliases may share one node many times over (a "billion laughs").
    seen: set[int] = set()
    pending: list[tuple[yaml.Node, _Loc]] = [(root, ())]
    while pending:
        node, loc = pending.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines[(*loc, index)] = item.start_mark.line + 1
                pending.append((item, (*loc, index)))
        elif isinstance(node, yaml.MappingNode):
            pending += _mapping_lines(file, node, loc, lines)
    return lines


def _mapping_lines(
    file: Path, node: yaml.MappingNode, loc: _Loc, lines: dict[_Loc, int]
) -> list[tuple[yaml.Node, _Loc]]:
    """Record the lines of one mapping's keys; returns its values to visit."""
    children: list[tuple[yaml.Node, _Loc]] = []
    for key, value in node.value:
        if not isinstance(key, yaml.ScalarNode) or key.tag == _MERGE_TAG:
            continue
        here = (*loc, key.value)
        line = key.start_mark.line + 1
        if here in lines:
            raise ConfigError(
                _one_line(
                    f"{file}, line {line}: {_key_path(here)}: given twice (first on line "
                    f"{lines[here]})"
                )
            )
        lines[here] = line
        children.append((value, here))
    return children


def _yaml_problem(file: Path, text: str, exc: yaml.YAMLError) -> str:
    """One line for a YAML error: where, under which key, and what YAML says."""
    line: int | None = None
    problem = str(exc).splitlines()[0]
    parsed = text
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or problem
    elif isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        problem = f"unacceptable character #x{exc.character:04x}"
        # The reader refuses the character before parsing starts: the key is in what precedes.
        parsed = text[: exc.position]
    path = _path_at_error(parsed)
    under = f"{_key_path(path)}: " if path else ""
    return f"{_at(file, line)}: {under}invalid YAML: {problem}"


@dataclass
class _Open:
    """A collection the parser is inside, for :func:`_path_at_error`."""

    loc: _Loc
    mapping: bool
    expect_key: bool = True
    #: The key whose value is being read, or the index of the item being read.
    child: str | int | None = None
    index: int = 0

    def path(self) -> _Loc:
        """Where the parser is: this collection, and the key or item inside it."""
        return self.loc if self.child is None else (*self.loc, self.child)


def _path_at_error(text: str) -> _Loc:
    """The key path YAML was inside when it stopped parsing ``text``; for text that parses,
    the path of its last node (``()`` at the top)."""
    stack: list[_Open] = []
    last: _Loc = ()
    try:
        for event in yaml.parse(text, Loader=_SettingsLoader):
            last = _follow(event, stack) or last
    except (yaml.YAMLError, RecursionError):
        return stack[-1].path() if stack else ()
    return last


def _follow(event: yaml.Event, stack: list[_Open]) -> _Loc | None:
    """Advance :func:`_path_at_error`'s stack of open collections by one parser event;
    returns the path of the node the event starts, if it starts one."""
    if isinstance(event, yaml.CollectionEndEvent):
        stack.pop()
        _node_done(stack)
        return None
    if not isinstance(event, yaml.NodeEvent):
        return None
    top = stack[-1] if stack else None
    if top is not None and top.mapping and top.expect_key:
        top.child = event.value if isinstance(event, yaml.ScalarEvent) else "?"
    elif top is not None and not top.mapping:
        top.child = top.index
    here = top.path() if top else ()
    if isinstance(event, yaml.CollectionStartEvent):
        stack.append(_Open(loc=here, mapping=isinstance(event, yaml.MappingStartEvent)))
    else:
        _node_done(stack)
    return here


def _node_done(stack: list[_Open]) -> None:
    """A node ended inside the innermost open collection: a key, a value or an item."""
    if not stack:
        return
    top = stack[-1]
    if top.mapping and top.expect_key:
        top.expect_key = False  # the key is read; its value comes next, under it
        return
    top.expect_key = True
    top.child = None
    top.index += 1


def _at(file: Path, line: int | None) -> str:
    """``FILE, line N`` (or the file alone when there is no line)."""
    return f"{file}, line {line}" if line else str(file)


def _key_path(loc: _Loc) -> str:
    """``launcher.heartbeat_seconds``, ``platform.mpi_launcher_args[0]``."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else f"{'.' if text else ''}{part}"
    return text or "(top level)"


def _validation_problem(file: Path, exc: PydanticValidationError, lines: dict[_Loc, int]) -> str:
    """One line for the first problem pydantic found (and how many more there are)."""
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc: _Loc = tuple(first["loc"])
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{_at(file, _line_of(loc, lines))}: {_key_path(loc)}: {_describe(first, loc)}{more}"


def _line_of(loc: _Loc, lines: dict[_Loc, int]) -> int | None:
    """The line of ``loc``, else of the nearest enclosing key that is in the file."""
    for end in range(len(loc), 0, -1):
        if loc[:end] in lines:
            return lines[loc[:end]]
    return None


def _describe(error: Any, loc: _Loc) -> str:
    """Pydantic's message in Balsam's words: lower case, the value it got, the known keys."""
    kind = error["type"]
    if kind == "extra_forbidden":
        known = ", ".join(_known_keys(loc[:-1]))
        what = "section" if len(loc) == 1 else "setting"
        return f"unknown {what} (known: {known})"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return "should be a mapping of settings (one 'key: value' per line)"
    message = str(error["msg"]).removeprefix("Value error, ")
    return message[:1].lower() + message[1:] + _got(kind, error.get("input"))


# Error types of a number field: the text it got is shown (no secret goes in a number field).
_NUMBER_ERRORS = ("float_type", "int_type", "float_parsing", "int_parsing", "int_from_float")


def _got(kind: str, value: object) -> str:
    """`` (got X)`` for a scalar that a number field refused, else nothing."""
    if isinstance(value, bool | int | float) and kind != "value_error":
        return f" (got {value!r})"
    if isinstance(value, str) and kind in _NUMBER_ERRORS:
        return f" (got {value[:40]!r})"
    return ""


def _known_keys(loc: _Loc) -> list[str]:
    """The keys the settings model at ``loc`` takes."""
    model: type[BaseModel] = SiteSettings
    for part in loc:
        field = model.model_fields.get(str(part))
        annotation = field.annotation if field else None
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return []
        model = annotation
    return list(model.model_fields)


def _one_line(message: str) -> str:
    """``message`` with control characters escaped: a key or a path holding a newline must
    not break the one line the CLI prints."""
    return _CONTROL.sub(lambda m: repr(m.group())[1:-1], message)


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
