"""`balsam server ...` and `balsam token ...`: what they print, and bad input refused in one
line with nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from balsam.server.auth import AuthStore, Role
from launchkit import cli


def _state(tmp_path: Path) -> list[str]:
    return ["--state", str(tmp_path / "state")]


def test_add_user_prints_only_the_token(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = cli(capsys, "server", "add-user", "alice", *_state(tmp_path))
    assert code == 0, err
    token = out.strip()
    store = AuthStore.open(tmp_path / "state", create=False)
    principal = store.authenticate(token)
    assert principal is not None and principal.user == "alice"
    assert ((tmp_path / "state").stat().st_mode & 0o777) == 0o700
    code, out, err = cli(
        capsys, "server", "grant", "alice", "submitter", "--db", "wf", *_state(tmp_path)
    )
    assert code == 0, err
    assert store.role_of("alice", "wf") is Role.SUBMITTER
    code, out, _ = cli(capsys, "server", "users", *_state(tmp_path))
    assert "wf:submitter" in out


def test_tokens_create_list_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cli(capsys, "server", "add-user", "bob", *_state(tmp_path))
    code, out, err = cli(capsys, "token", "create", "bob", "--label", "laptop", *_state(tmp_path))
    assert code == 0, err
    second = out.strip()
    code, out, _ = cli(capsys, "token", "list", *_state(tmp_path))
    assert "laptop" in out and second not in out and out.count("valid") == 2
    code, out, err = cli(capsys, "token", "revoke", "2", *_state(tmp_path))
    assert code == 0, err
    store = AuthStore.open(tmp_path / "state", create=False)
    assert store.authenticate(second) is None
    code, out, _ = cli(capsys, "token", "list", "--user", "bob", *_state(tmp_path))
    assert "revoked" in out


@pytest.mark.parametrize(
    ("argv", "code", "says"),
    [
        (["server", "grant", "alice", "boss", "--db", "wf"], 2, "'boss' is not one of"),
        (["server", "grant", "nobody", "owner", "--db", "wf"], 3, "no user 'nobody'"),
        (["server", "grant", "alice", "owner", "--db", "a/b"], 2, "invalid database name"),
        (["server", "add-user", "alice"], 4, "exists already"),
        (["server", "add-user", "x y"], 2, "invalid user name"),
        (["token", "create", "alice", "--days", "0"], 2, "token lifetime"),
        (["token", "create", "alice", "--days", "nan"], 2, "token lifetime"),
        (["token", "revoke", "99"], 3, "no token 99"),
        (["server", "start", "/nonexistent/site"], 3, "does not exist"),
    ],
)
def test_bad_input_is_one_line_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], code: int, says: str
) -> None:
    cli(capsys, "server", "add-user", "alice", *_state(tmp_path))
    before = (tmp_path / "state" / "auth.db").read_bytes()
    got, out, err = cli(capsys, *argv, *_state(tmp_path))
    assert out == ""
    assert got == code, err
    assert len(err.strip().splitlines()) == 1 and says in err
    assert (tmp_path / "state" / "auth.db").read_bytes() == before


def test_admin_commands_need_state_they_do_not_make(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "token", "list", *_state(tmp_path))
    assert code == 2 and "no server state" in err
    assert not (tmp_path / "state").exists()


def test_start_refuses_state_others_can_read(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from balsam.backends.factory import init_site

    site = init_site(tmp_path / "wf")
    cli(capsys, "server", "add-user", "alice", *_state(tmp_path))
    (tmp_path / "state").chmod(0o755)
    code, _, err = cli(capsys, "server", "start", str(site.path), *_state(tmp_path))
    assert code == 2 and "group and others must have no access" in err


def test_start_needs_users_and_a_free_port(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import socket

    from balsam.backends.factory import init_site

    site = init_site(tmp_path / "wf")
    code, _, err = cli(capsys, "server", "start", str(site.path), *_state(tmp_path))
    assert code == 2 and "run 'balsam server add-user'" in err
    assert not (tmp_path / "state").exists()
    cli(capsys, "server", "add-user", "alice", *_state(tmp_path))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        code, _, err = cli(
            capsys, "server", "start", str(site.path), "--port", port, *_state(tmp_path)
        )
    assert code == 2 and f"cannot listen on 127.0.0.1:{port}" in err
    assert len(err.strip().splitlines()) == 1


WITHOUT_FASTAPI = """\
import sys
for name in ("fastapi", "starlette", "uvicorn"):
    sys.modules[name] = None  # an install without the server extra
import balsam.backends.remote
from balsam.cli.main import main
sys.exit(main(sys.argv[1:]))
"""


def test_clients_and_admin_commands_need_no_fastapi(tmp_path: Path) -> None:
    """Without the server extra: the RemoteBackend imports, the admin commands work, and
    `server start` says what to install, in one line."""
    import subprocess
    import sys

    from balsam.backends.factory import init_site

    site = init_site(tmp_path / "wf")

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", WITHOUT_FASTAPI, *argv, *_state(tmp_path)],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip

    added = run("server", "add-user", "alice")
    assert added.returncode == 0, added.stderr
    started = run("server", "start", str(site.path))
    assert started.returncode == 2
    assert started.stderr.count("\n") == 1 and "pip install 'balsam[server]'" in started.stderr
