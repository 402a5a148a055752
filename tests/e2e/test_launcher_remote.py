"""A real launcher that reaches its workflow database only through a real `balsam server`.

The launcher runs in a site directory of its own that holds settings and job directories but
no database file (opening it locally would fail: "workflow database file ... is missing"), with
BALSAM_URL and BALSAM_TOKEN naming the served database and a token of a submitter. Every job
must end JOB_FINISHED, exactly once in its history.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from balsam.backends.factory import init_site
from balsam.backends.remote import RemoteBackend
from balsam.config import SQLITE_FILE
from balsam.domain.commands import split_words
from balsam.schemas.jobs import JobOut
from balsam.server.auth import AuthStore, Role
from launchkit import (
    S,
    add_app,
    add_jobs,
    all_jobs,
    balsam,
    launch,
    start_launcher,
    stop,
    wait_for,
)
from serverkit import uvicorn_server

JOBS = 12


def _compute_dir(served: Path, where: Path) -> Path:
    """A site directory like ``served`` without its database (what a compute node sees)."""
    shutil.copytree(served, where)
    for file in where.glob(f"{SQLITE_FILE}*"):
        file.unlink()
    return where


def _campaign(
    tmp_path: Path, node: str, users: dict[str, Role], db_url: str = ""
) -> tuple[Path, Path, Path, dict[str, str]]:
    """The served site ``campaign`` (SQLite, or the PostgreSQL database at ``db_url``), its
    copy without a database under ``tmp_path/node``, and the server's state directory with
    each user granted its role: (served, compute, state, the users' first tokens by name)."""
    where = tmp_path / "campaign"
    served = (init_site(where, kind="url", url=db_url) if db_url else init_site(where)).path
    compute = _compute_dir(served, tmp_path / node / "campaign")
    state = tmp_path / "state"
    auth = AuthStore.open(state)
    tokens = {}
    for user, role in users.items():
        tokens[user] = auth.add_user(user)
        auth.grant(user, role, "campaign")
    return served, compute, state, tokens


def test_a_launcher_runs_jobs_through_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    served, compute, state, tokens = _campaign(
        tmp_path, "node", {"alice": Role.OWNER, "launcher": Role.SUBMITTER}
    )
    owner, runner = tokens["alice"], tokens["launcher"]
    with uvicorn_server([served], state) as base:
        url = f"{base}/db/campaign"
        be = RemoteBackend(url, owner)
        try:
            add_app(be, "SayHello", "echo hello,")
            jobs = add_jobs(
                be, "SayHello", *({"name": f"hi{i}", "args": f"world {i}"} for i in range(JOBS))
            )
            monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
            monkeypatch.setenv("BALSAM_URL", url)
            monkeypatch.setenv("BALSAM_TOKEN", runner)
            done = launch("--consume-all", "--job-mode", "serial", timeout=120)
            assert done.returncode == 0, done.stderr
            finished = all_jobs(be)
            assert [j.state for j in finished] == [S.JOB_FINISHED] * JOBS
            for job in jobs:
                ends = [e for e in be.history(job.job_id) if e.to_state == S.JOB_FINISHED]
                assert len(ends) == 1, be.history(job.job_id)
            for job in finished:
                out = compute / job.working_directory / f"{job.name}.out"
                assert out.read_text() == f"hello, world {job.name[2:]}\n"
            assert not (compute / SQLITE_FILE).exists(), "the launcher made a database"
        finally:
            be.close()


def _ended(compute: Path, job: JobOut) -> bool:
    """Whether the job's process ran to its end (its output is written)."""
    out = compute / job.working_directory / f"{job.name}.out"
    return out.is_file() and out.read_text() == "ok\n"


def _logs(compute: Path) -> str:
    return "\n".join(p.read_text()[-3000:] for p in sorted((compute / "log").glob("*")))


def test_a_launcher_outlives_a_server_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server stops while jobs run and comes back on the same port once a job has ended
    with no server to tell: the launcher's calls fail transiently meanwhile and are repeated
    later, and every job still ends JOB_FINISHED exactly once."""
    served, compute, state, tokens = _campaign(
        tmp_path, "node", {"alice": Role.OWNER, "launcher": Role.SUBMITTER}
    )
    owner, runner = tokens["alice"], tokens["launcher"]
    proc = None
    try:
        with uvicorn_server([served], state) as base:
            port = int(base.rsplit(":", 1)[1])
            url = f"{base}/db/campaign"
            with contextlib.closing(RemoteBackend(url, owner)) as be:
                add_app(be, "Nap", "/bin/sh")
                specs = ({"name": f"nap{i}", "args": "-c 'sleep 1; echo ok'"} for i in range(6))
                jobs = add_jobs(be, "Nap", *specs)
                monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
                monkeypatch.setenv("BALSAM_URL", url)
                monkeypatch.setenv("BALSAM_TOKEN", runner)
                proc = start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
                wait_for("a job RUNNING", lambda: any(j.state is S.RUNNING for j in all_jobs(be)))
        wait_for("a job to end with the server down", lambda: any(_ended(compute, j) for j in jobs))
        assert proc.poll() is None, f"the launcher gave up: {_logs(compute)}"
        with uvicorn_server([served], state, port=port):
            try:
                proc.wait(timeout=120)
            except subprocess.TimeoutExpired:
                pytest.fail(f"the launcher did not finish: {_logs(compute)}")
            assert proc.returncode == 0, _logs(compute)
            with contextlib.closing(RemoteBackend(url, owner)) as be:
                assert [j.state for j in all_jobs(be)] == [S.JOB_FINISHED] * len(jobs)
                for job in jobs:
                    ends = [e for e in be.history(job.job_id) if e.to_state == S.JOB_FINISHED]
                    assert len(ends) == 1, be.history(job.job_id)
        logs = "".join(p.read_text() for p in (compute / "log").glob("*"))
        assert "cannot reach the Balsam server" in logs, "the outage went unnoticed"
    finally:
        if proc is not None:
            stop(proc)


def test_the_cli_works_through_the_server_within_its_role(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`balsam app`, `balsam job` and `balsam ls` in a site directory without a database,
    through a real server; a viewer's `balsam job` is one line and exit 9, and adds nothing."""
    served, compute, state, tokens = _campaign(
        tmp_path, "laptop", {"alice": Role.OWNER, "carol": Role.VIEWER}
    )
    owner, viewer = tokens["alice"], tokens["carol"]
    with uvicorn_server([served], state) as base:
        monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
        monkeypatch.setenv("BALSAM_URL", f"{base}/db/campaign")
        monkeypatch.setenv("BALSAM_TOKEN", owner)
        made = balsam("app", "--name", "SayHello", "--executable", "echo hello,")
        assert made.returncode == 0, made.stderr
        job = ["job", "--name", "hi", "--workflow", "test", "--application", "SayHello", "--yes"]
        added = balsam(*job)
        assert added.returncode == 0, added.stderr
        monkeypatch.setenv("BALSAM_TOKEN", viewer)
        refused = balsam(*job[:2], "again", *job[3:])
        assert refused.returncode == 9
        assert refused.stderr.count("\n") == 1 and "needs role submitter" in refused.stderr
        listed = balsam("ls")
        assert listed.returncode == 0, listed.stderr
        assert "hi" in listed.stdout and "again" not in listed.stdout
    assert not (compute / SQLITE_FILE).exists()
    (log,) = tmp_path.glob("server-*.log")
    assert "denied user=carol db=campaign role=viewer needed=submitter POST" in log.read_text()


SPAWNER = """\
from balsam.launcher import dag

dag.spawn_child(name="child", application="SayHello", args="from the child")
print("spawned by", dag.current_job.name)
"""


def test_dag_inside_a_job_reaches_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A job's own script calls ``dag.spawn_child``: the job inherits the launcher's
    BALSAM_URL and BALSAM_TOKEN (its BALSAM_DB_PATH has no database), so the child is made
    through the server, and the same launcher runs it once the parent is done."""
    served, compute, state, tokens = _campaign(
        tmp_path, "node", {"launcher": Role.SUBMITTER, "alice": Role.OWNER}
    )
    runner, owner = tokens["launcher"], tokens["alice"]
    script = tmp_path / "spawn.py"
    script.write_text(SPAWNER)
    with uvicorn_server([served], state) as base:
        url = f"{base}/db/campaign"
        with contextlib.closing(RemoteBackend(url, owner)) as be:
            add_app(be, "SayHello", "echo hello,")
            add_app(be, "Spawner", f"{sys.executable} {script}")
            add_jobs(be, "Spawner", {"name": "parent"})
            monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
            monkeypatch.setenv("BALSAM_URL", url)
            monkeypatch.setenv("BALSAM_TOKEN", runner)
            done = launch("--consume-all", "--job-mode", "serial", timeout=120)
            assert done.returncode == 0, done.stderr
            jobs = {j.name: j for j in all_jobs(be)}
            assert set(jobs) == {"parent", "child"}
            assert {j.state for j in jobs.values()} == {S.JOB_FINISHED}
            assert be.children_of(jobs["parent"].job_id) == [jobs["child"].job_id]
            parent_out = compute / jobs["parent"].working_directory / "parent.out"
            assert parent_out.read_text() == "spawned by parent\n"
            child_out = compute / jobs["child"].working_directory / "child.out"
            assert child_out.read_text() == "hello, from the child\n"
    assert not (compute / SQLITE_FILE).exists()


@pytest.mark.parametrize("database", ["sqlite", "postgres"])
def test_two_launchers_outlive_a_server_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, database: str
) -> None:
    """Issue 12's test: uvicorn restarted under two running launchers on two "nodes" (each a
    site directory without a database) sharing one served database, SQLite or PostgreSQL.
    Each job ends JOB_FINISHED exactly once and ran on exactly one node."""
    url_of_db = ""
    if database == "postgres":
        from pgserver import new_pg_database

        url_of_db = new_pg_database(request.getfixturevalue("pg_server"))
    users = {"alice": Role.OWNER, "launcher": Role.SUBMITTER}
    served, node1, state, tokens = _campaign(tmp_path, "node1", users, url_of_db)
    nodes = [node1, _compute_dir(served, tmp_path / "node2" / "campaign")]
    owner, runner = tokens["alice"], tokens["launcher"]
    procs: list[subprocess.Popen[str]] = []
    try:
        with uvicorn_server([served], state) as base:
            port = int(base.rsplit(":", 1)[1])
            url = f"{base}/db/campaign"
            with contextlib.closing(RemoteBackend(url, owner)) as be:
                add_app(be, "Nap", "/bin/sh")
                specs = ({"name": f"nap{i}", "args": "-c 'sleep 1; echo ok'"} for i in range(16))
                jobs = add_jobs(be, "Nap", *specs)
                monkeypatch.setenv("BALSAM_URL", url)
                monkeypatch.setenv("BALSAM_TOKEN", runner)
                for node in nodes:
                    monkeypatch.setenv("BALSAM_DB_PATH", str(node))
                    procs.append(
                        start_launcher("--consume-all", "--job-mode", "serial", quiet=True)
                    )

                def both_run() -> bool:
                    running = [j for j in all_jobs(be) if j.state is S.RUNNING]
                    return len({j.session_id for j in running}) == 2

                wait_for("jobs RUNNING under both launchers", both_run, timeout=60)
        # The server is down: wait until a job has ended unreported on each node.
        for node in nodes:
            wait_for(
                f"a job to end on {node.parent.name} with the server down",
                lambda node=node: any(_ended(node, j) for j in jobs),
            )
        assert all(p.poll() is None for p in procs), "a launcher gave up: " + "".join(
            _logs(n) for n in nodes
        )
        with uvicorn_server([served], state, port=port):
            for proc, node in zip(procs, nodes, strict=True):
                try:
                    proc.wait(timeout=180)
                except subprocess.TimeoutExpired:
                    pytest.fail(f"a launcher did not finish: {_logs(node)}")
                assert proc.returncode == 0, _logs(node)
            with contextlib.closing(RemoteBackend(url, owner)) as be:
                finished = all_jobs(be)
                assert [j.state for j in finished] == [S.JOB_FINISHED] * len(jobs)
                for job in finished:
                    history = be.history(job.job_id)
                    assert [e.to_state for e in history].count(S.RUNNING) == 1, history
                    assert [e.to_state for e in history].count(S.JOB_FINISHED) == 1, history
                    ran_on = [n for n in nodes if _ended(n, job)]
                    assert len(ran_on) == 1, f"{job.name} ran on {ran_on}"
        for node in nodes:
            assert "cannot reach the Balsam server" in _logs(node), "an outage went unnoticed"
    finally:
        for proc in procs:
            stop(proc)


#: The app of the injection test: its argv and the environment variables it is told to show,
#: as JSON, so the test compares exact strings.
SHOW_ARGV = """\
import json, os, sys

names = os.environ["SHOW_ENV"].split(",")
print(json.dumps({"argv": sys.argv[1:], "env": {n: os.environ.get(n) for n in names}}))
"""


def _payloads(marker: Path) -> list[str]:
    """Strings that a shell would turn into the creation of a file starting with ``marker``."""
    return [
        f"; touch {marker}1",
        f"$(touch {marker}2)",
        f"`touch {marker}3`",
        f"&& touch {marker}4",
        f"x\ntouch {marker}5",
        f"'; touch {marker}6; '",
        f'"; touch {marker}7; "',
        f"| touch {marker}8",
        f"${{IFS}}touch${{IFS}}{marker}9",
    ]


def test_job_parameters_never_reach_a_shell_through_the_server(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Jobs made through a real server carry shell syntax in their args and environment,
    for an app exec'd directly and for one that needs a shell (an envscript): a real launcher
    runs them, nothing the syntax asks for happens, and the app sees the exact strings.
    Job names cannot carry it at all: the server refuses them."""
    served, compute, state, tokens = _campaign(
        tmp_path, "node", {"alice": Role.OWNER, "launcher": Role.SUBMITTER}
    )
    marker = tmp_path / "pwned"
    payloads = _payloads(marker)
    script = tmp_path / "show_argv.py"
    script.write_text(SHOW_ARGV)
    envscript = tmp_path / "env.sh"
    envscript.write_text("export FROM_ENVSCRIPT=yes\n")
    executable = shlex.join([sys.executable, str(script)])
    shown_env = {f"PAYLOAD{i}": p for i, p in enumerate(payloads)}
    env = {**shown_env, "SHOW_ENV": ",".join([*shown_env, "FROM_ENVSCRIPT"])}
    words = [*payloads, *(w for p in payloads for w in split_words(p, "args"))]
    with uvicorn_server([served], state) as base:
        url = f"{base}/db/campaign"
        with contextlib.closing(RemoteBackend(url, tokens["alice"])) as be:
            add_app(be, "Direct", executable)
            add_app(be, "Sourced", executable, envscript=str(envscript))
            # Each payload once as one quoted argument and once bare, split into words.
            args = shlex.join(payloads) + " " + " ".join(payloads).replace("\n", " ")
            jobs = add_jobs(
                be,
                "Direct",
                {"name": "direct", "args": args, "environ_vars": env},
            ) + add_jobs(be, "Sourced", {"name": "sourced", "args": args, "environ_vars": env})
            # Sent raw: the client's own JobCreate would refuse these names before the server.
            auth = {"Authorization": f"Bearer {tokens['alice']}"}
            for bad in ("a;b", "$(x)", "`x`", "a&&b", "a\nb", "a'b", 'a"b'):
                body = [{"workflow": "test", "application": "Direct", "name": bad}]
                refused = httpx.post(f"{url}/jobs", json=body, headers=auth, timeout=30)
                assert refused.status_code == 422 and "name" in refused.text, refused.text
            monkeypatch.setenv("BALSAM_DB_PATH", str(compute))
            monkeypatch.setenv("BALSAM_URL", url)
            monkeypatch.setenv("BALSAM_TOKEN", tokens["launcher"])
            done = launch("--consume-all", "--job-mode", "serial", timeout=120)
            assert done.returncode == 0, done.stderr
            assert [j.state for j in all_jobs(be)] == [S.JOB_FINISHED] * 2, _logs(compute)
    assert sorted(p.name for p in tmp_path.rglob("pwned*")) == [], "a shell ran a payload"
    for job, sourced in zip(jobs, (None, "yes"), strict=True):
        shown = json.loads((compute / job.working_directory / f"{job.name}.out").read_text())
        assert shown["argv"] == split_words(args, "args")
        assert shown["argv"][: len(payloads)] == payloads  # the quoted ones, exactly
        assert set(shown["argv"]) <= set(words)
        assert shown["env"] == {**shown_env, "FROM_ENVSCRIPT": sourced}
