"""A broken ``settings.yml`` is one ConfigError line naming the file, the line and the key.

Each case is a file a user (or a full disk, or a bad editor) could leave behind; the loader
must refuse it with a message a user can act on, and never hand pydantic's or PyYAML's
multi-line text (or a password in a URL) through.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from balsam.config import (
    DATABASE_URL_SCHEMES,
    MAX_SETTING_SECONDS,
    LauncherSettings,
    SiteSettings,
    load_settings,
    save_settings,
)
from balsam.errors import ConfigError, NotFound

#: (case, file content, line named, key path named, words of the problem)
BROKEN: list[tuple[str, bytes, int | None, str, str]] = [
    ("unclosed list", b"launcher:\n  heartbeat_seconds: [1\n", 3,
     "launcher.heartbeat_seconds", "invalid YAML"),
    # PyYAML fails looking ahead, before it has read the key: the line and section are named.
    ("mapping inside a value", b"launcher:\n  claim_batch: 4\n  error_tail_lines: a: b\n", 3,
     "launcher", "invalid YAML: mapping values are not allowed here"),
    ("tab indentation", b"launcher:\n\theartbeat_seconds: 5\n", 2, "launcher", "invalid YAML"),
    ("two documents", b"launcher: {}\n---\nplatform: {}\n", 2, "", "invalid YAML"),
    ("python tag", b"launcher: !!python/object/apply:os.system [true]\n", 1, "",
     "could not determine a constructor"),
    ("binary junk", b"\xff\xfe\x00\x01junk", 1, "", "not UTF-8 text (byte 0xff)"),
    ("invalid UTF-8 on a later line", b"launcher:\n  claim_batch: 4\n  \xc3\x28: 1\n", 3, "",
     "not UTF-8 text"),
    ("NUL byte", b"launcher:\n  claim_batch: 4\n  kill_poll_seconds: \x00\n", 3,
     "launcher.kill_poll_seconds", "unacceptable character #x0000"),
    ("top level is a list", b"- database\n- launcher\n", 1, "",
     "the top level is a list, not a mapping of sections (database, launcher, platform, "
     "projects, queues, service, transfer)"),
    ("top level is text", b"just some words\n", 1, "", "the top level is text"),
    ("empty file", b"", None, "", "is empty"),
    ("only comments", b"# launcher:\n#   claim_batch: 4\n", None, "", "is empty"),
    ("unknown section", b"launcher: {}\nlauncherz: {}\n", 2, "launcherz",
     "unknown section (known: database, launcher, platform, projects, queues, service, "
     "transfer)"),
    ("unknown key", b"launcher:\n  claim_batch: 4\n  heartbeat_second: 5\n", 3,
     "launcher.heartbeat_second", "unknown setting (known: lease_seconds, heartbeat_seconds"),
    ("key given twice", b"launcher:\n  claim_batch: 4\n  claim_batch: 8\n", 3,
     "launcher.claim_batch", "given twice (first on line 2)"),
    ("section that is a number", b"launcher: 5\n", 1, "launcher",
     "should be a mapping of settings"),
    ("yes for a number", b"launcher:\n  claim_batch: yes\n", 2, "launcher.claim_batch",
     "valid integer (got True)"),
    ("text for a number", b"launcher:\n  heartbeat_seconds: ten\n", 2,
     "launcher.heartbeat_seconds", "valid number (got 'ten')"),
    ("quoted number", b"launcher:\n  heartbeat_seconds: '10'\n", 2,
     "launcher.heartbeat_seconds", "valid number (got '10')"),
    ("fraction for a count", b"launcher:\n  claim_batch: 1.5\n", 2, "launcher.claim_batch",
     "valid integer (got 1.5)"),
    ("number for text", b"platform:\n  scheduler: 12\n", 2, "platform.scheduler",
     "valid string (got 12)"),
    (".inf", b"launcher:\n  heartbeat_seconds: .inf\n", 2, "launcher.heartbeat_seconds",
     "finite number (got inf)"),
    (".nan", b"launcher:\n  kill_grace_seconds: .nan\n", 2, "launcher.kill_grace_seconds",
     "finite number (got nan)"),
    ("-.inf", b"launcher:\n  kill_grace_seconds: -.inf\n", 2, "launcher.kill_grace_seconds",
     "finite number (got -inf)"),
    ("overflowing float", b"launcher:\n  lease_seconds: 1e400\n", 2, "launcher.lease_seconds",
     "finite number (got inf)"),
    ("overflowing count", b"launcher:\n  claim_batch: 1e400\n", 2, "launcher.claim_batch",
     "valid integer (got inf)"),
    ("port out of range", b"database:\n  port: 70000\n", 2, "database.port",
     "less than or equal to 65535 (got 70000)"),
    ("huge cpu count", b"platform:\n  cpus_per_node: 99999999999999999999999\n", 2,
     "platform.cpus_per_node", "less than or equal to 65536"),
    ("zero batch", b"launcher:\n  claim_batch: 0\n", 2, "launcher.claim_batch",
     "greater than or equal to 1 (got 0)"),
    ("a lease of a year", b"launcher:\n  lease_seconds: 31536000.0\n", 2,
     "launcher.lease_seconds", f"less than or equal to {MAX_SETTING_SECONDS:g}"),
    ("lease shorter than 3 heartbeats", b"launcher:\n  lease_seconds: 5.0\n", 1, "launcher",
     "lease_seconds (5) must be at least 3 x heartbeat_seconds (10)"),
    ("newline in a list item", b'platform:\n  mpi_launcher_args: [ok, "a\\nb"]\n', 2,
     "platform.mpi_launcher_args[1]", "holds the control character '\\n'"),
    ("bad environment variable name", b"platform:\n  gpu_visible_env: A=B\n", 2,
     "platform.gpu_visible_env", "should match pattern"),
    ("empty database URL", b"database:\n  kind: url\n  url: ''\n", 3, "database.url",
     "the database URL is empty"),
    ("no database URL", b"database:\n  kind: url\n", 1, "database.url",
     "the database URL is empty"),
    ("unknown database scheme", b"database:\n  kind: url\n  url: mysql://u@h/db\n", 3,
     "database.url",
     "unsupported scheme 'mysql' (supported: postgresql, postgresql+psycopg, sqlite)"),
    ("database URL without a scheme", b"database:\n  kind: url\n  url: somehost/db\n", 3,
     "database.url", "is not a URL"),
    ("database URL with a bad port", b"database:\n  kind: url\n  url: postgresql://h:99999/d\n",
     3, "database.url", "port that is not a number from 0 to 65535"),
    ("unknown database kind", b"database:\n  kind: mongo\n", 2, "database.kind",
     "'sqlite', 'postgres' or 'url'"),
]  # fmt: skip


def write(site: Path, content: bytes) -> Path:
    """Put ``content`` in the site's settings.yml; returns the file."""
    file = site / "settings.yml"
    file.write_bytes(content)
    return file


def refusal(site: Path) -> str:
    """The message of the ConfigError that loading the site's settings raises."""
    with pytest.raises(ConfigError) as caught:
        load_settings(site)
    return str(caught.value)


@pytest.mark.parametrize(
    ("content", "line", "key", "words"),
    [case[1:] for case in BROKEN],
    ids=[case[0] for case in BROKEN],
)
def test_a_broken_file_is_one_line_naming_file_line_and_key(
    tmp_path: Path, content: bytes, line: int | None, key: str, words: str
) -> None:
    file = write(tmp_path, content)
    message = refusal(tmp_path)
    where = f"{file}, line {line}: " if line else f"{file}: "
    assert message.startswith(where + (f"{key}: " if key else "")), message
    assert words in message
    assert "\n" not in message and "\r" not in message
    assert "pydantic" not in message and "<unicode string>" not in message


def test_a_database_url_problem_never_shows_the_password(tmp_path: Path) -> None:
    for url in ("mysql://me:hunter2@h/db", "postgresql://me:hunter2@h:99999/db"):
        write(tmp_path, f"database:\n  kind: url\n  url: '{url}'\n".encode())
        message = refusal(tmp_path)
        assert "hunter2" not in message
        assert "database.url" in message


@pytest.mark.parametrize("scheme", DATABASE_URL_SCHEMES)
def test_every_supported_scheme_loads(tmp_path: Path, scheme: str) -> None:
    url = f"{scheme}:///{tmp_path}/x.db" if scheme == "sqlite" else f"{scheme}://u@h:5432/db"
    write(tmp_path, f"database:\n  kind: url\n  url: '{url}'\n".encode())
    assert load_settings(tmp_path).database.url == url


FLOAT_FIELDS = [name for name, f in LauncherSettings.model_fields.items() if f.annotation is float]


@pytest.mark.parametrize("field", FLOAT_FIELDS)
@pytest.mark.parametrize("value", [".nan", ".inf", "-.inf", ".NaN", "1e400"])
def test_no_float_setting_takes_a_non_finite_number(tmp_path: Path, field: str, value: str) -> None:
    file = write(tmp_path, f"launcher:\n  {field}: {value}\n".encode())
    message = refusal(tmp_path)
    assert message.startswith(f"{file}, line 2: launcher.{field}: input should be a finite")


def test_no_float_setting_takes_a_non_finite_number_from_code_either() -> None:
    for field in FLOAT_FIELDS:
        for value in (math.nan, math.inf):
            with pytest.raises(ValueError, match="finite number"):
                LauncherSettings.model_validate({field: value})


def test_a_key_holding_a_newline_stays_on_one_line(tmp_path: Path) -> None:
    write(tmp_path, b'launcher:\n  "claim\\nbatch": 4\n')
    message = refusal(tmp_path)
    assert "\n" not in message
    assert "launcher.claim\\nbatch: unknown setting" in message


def test_several_problems_are_counted_in_the_one_line(tmp_path: Path) -> None:
    write(tmp_path, b"launcher:\n  claim_batch: 0\n  error_tail_lines: 0\n  oops: 1\n")
    message = refusal(tmp_path)
    assert message.endswith("(and 2 more problem(s))"), message


def test_an_alias_bomb_is_refused_without_expanding(tmp_path: Path) -> None:
    # Nine levels of nine aliases: 9**9 leaves if anything walked the aliases' expansion.
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    write(tmp_path, ("\n".join(lines) + "\n").encode())
    assert "a0: unknown section" in refusal(tmp_path)


def test_deep_nesting_and_huge_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path, b"launcher: " + b"[" * 20000)
    assert "invalid YAML" in refusal(tmp_path) or "nested too deeply" in refusal(tmp_path)
    write(tmp_path, b"# " + b"x" * (2 << 20) + b"\n")
    assert "larger than 1 MiB" in refusal(tmp_path)


def test_an_unreadable_file_is_one_line(tmp_path: Path) -> None:
    (tmp_path / "settings.yml").mkdir()
    message = refusal(tmp_path)
    assert message.startswith(f"cannot read {tmp_path / 'settings.yml'}: ")
    assert "\n" not in message


def test_a_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="not a Balsam workflow database"):
        load_settings(tmp_path)


def test_what_balsam_writes_loads_back(tmp_path: Path) -> None:
    settings = SiteSettings()
    save_settings(tmp_path, settings)
    assert load_settings(tmp_path) == settings


def test_forgiving_where_the_meaning_is_plain(tmp_path: Path) -> None:
    # An exponent without a dot is a number (YAML 1.1 alone would make it text); a section
    # with every key commented out keeps its defaults; a byte-order mark is not junk.
    write(tmp_path, b"\xef\xbb\xbflauncher:\n  heartbeat_seconds: 1e1\nplatform:\n#  x: 1\n")
    loaded = load_settings(tmp_path)
    assert loaded.launcher.heartbeat_seconds == 10.0
    assert loaded.platform == SiteSettings().platform
