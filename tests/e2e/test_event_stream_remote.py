"""The event stream on a real ``balsam server`` (uvicorn on loopback), read by the real client.

Every transition of the jobs a real launcher runs arrives once and in order; a stream resumed
with Last-Event-ID after a disconnect, and one that outlives a server restart, lose nothing and
repeat nothing; viewers may stream, nobody else; streams give their slot back when the client
leaves; and ``balsam ls --watch`` and ``balsam events --follow`` over the server react to a
change (driven as subprocesses). On SQLite and PostgreSQL behind the server.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from balsam.backends.factory import init_site, open_local_backend
from balsam.backends.remote import RemoteBackend
from balsam.backends.stream import EventStream
from balsam.config import SQLITE_FILE, load_site
from balsam.domain.states import JobState
from balsam.errors import AccessDenied
from balsam.schemas.jobs import StreamEvent
from balsam.server.auth import AuthStore, Role
from launchkit import S, add_app, add_jobs, all_jobs, launch
from pgserver import PgServer, new_pg_database
from serverkit import uvicorn_server
from waiting import wait_until

BALSAM = Path(sys.executable).parent / "balsam"
USERS = {"alice": Role.OWNER, "launcher": Role.SUBMITTER, "watcher": Role.VIEWER}


class Campaign:
    """A served site ``campaign`` (and ``elsewhere``), its copy without a database (what a
    compute node or a user's laptop holds), and a token per user."""

    def __init__(self, tmp_path: Path, db: str, pg: PgServer | None) -> None:
        def site(name: str) -> Path:
            if db == "postgres":
                assert pg is not None
                return init_site(tmp_path / name, "url", new_pg_database(pg)).path
            return init_site(tmp_path / name).path

        self.served, self.elsewhere = site("campaign"), site("elsewhere")
        self.compute = tmp_path / "node" / "campaign"
        shutil.copytree(self.served, self.compute)
        for file in self.compute.glob(f"{SQLITE_FILE}*"):
            file.unlink()
        self.state = tmp_path / "state"
        auth = AuthStore.open(self.state)
        self.tokens = {}
        for user, role in USERS.items():
            self.tokens[user] = auth.add_user(user)
            auth.grant(user, role, "campaign")
        self.tokens["stranger"] = auth.add_user("stranger")
        auth.grant("stranger", Role.OWNER, "elsewhere")

    @contextlib.contextmanager
    def server(self, port: int = 0) -> Iterator[str]:
        """The database's URL on a server running for the block."""
        with uvicorn_server([self.served, self.elsewhere], self.state, port=port) as base:
            yield f"{base}/db/campaign"


@pytest.fixture(params=["sqlite", "postgres"])
def campaign(request: pytest.FixtureRequest, tmp_path: Path) -> Campaign:
    pg = request.getfixturevalue("pg_server") if request.param == "postgres" else None
    return Campaign(tmp_path, request.param, pg)


class Collector:
    """An EventStream read in a thread into ``events``."""

    def __init__(self, url: str, token: str, after: int | None = 0) -> None:
        self.remote = RemoteBackend(url, token)
        self.stop = threading.Event()
        self.stream = EventStream(self.remote, after=after, stop=self.stop)
        self.events: list[StreamEvent] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for event in self.stream:
                self.events.append(event)
        except BaseException as exc:  # reported by the test
            self.error = exc

    def has(self, count: int) -> bool:
        """Whether ``count`` events arrived (raising what the stream failed with)."""
        if self.error is not None:
            raise self.error
        return len(self.events) >= count

    def close(self) -> None:
        self.stream.close()  # cuts the read it may be blocked in
        self.thread.join(timeout=30)
        assert not self.thread.is_alive()
        self.remote.close()


def _log(be: RemoteBackend, after: int = 0) -> list[StreamEvent]:
    """The event log as it stands (the truth a stream must match)."""
    found: list[StreamEvent] = []
    while True:
        page = be.events_since(after, 500)
        found += page.events
        after = page.cursor
        if not page.more:
            return found


def _same(got: list[StreamEvent], expected: list[StreamEvent]) -> None:
    ids = [e.id for e in got]
    assert ids == sorted(set(ids)), "an event came twice or out of order"
    assert got == expected


def test_every_transition_of_a_real_launchers_jobs_arrives_once_in_order(
    campaign: Campaign, monkeypatch: pytest.MonkeyPatch
) -> None:
    with (
        campaign.server() as url,
        contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be,
    ):
        stream = Collector(url, campaign.tokens["watcher"], after=0)
        try:
            add_app(be, "SayHello", "echo hello,")
            jobs = add_jobs(be, "SayHello", *({"name": f"hi{i}"} for i in range(8)))
            monkeypatch.setenv("BALSAM_DB_PATH", str(campaign.compute))
            monkeypatch.setenv("BALSAM_URL", url)
            monkeypatch.setenv("BALSAM_TOKEN", campaign.tokens["launcher"])
            done = launch("--consume-all", "--job-mode", "serial", timeout=120)
            assert done.returncode == 0, done.stderr
            assert [j.state for j in all_jobs(be)] == [S.JOB_FINISHED] * len(jobs)
            expected = _log(be)
            wait_until(lambda: stream.has(len(expected)), what="every event on the stream")
            _same(stream.events, expected)
            for job in jobs:
                mine = [e.to_state for e in stream.events if e.job_id == job.job_id]
                assert mine == [e.to_state for e in be.history(job.job_id)]
                assert mine.count(S.RUNNING) == mine.count(S.JOB_FINISHED) == 1
            assert stream.stream.connections == 1
        finally:
            stream.close()


def test_a_resumed_stream_loses_nothing_and_repeats_nothing(campaign: Campaign) -> None:
    with (
        campaign.server() as url,
        contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be,
    ):
        add_app(be, "A", "true")
        jobs = add_jobs(be, "A", *({"name": f"j{i}"} for i in range(4)))
        first = Collector(url, campaign.tokens["watcher"], after=0)
        wait_until(lambda: first.has(len(_log(be))), what="the first events")
        first.close()  # the client goes away mid-campaign ...
        for job in jobs:  # ... while jobs change
            be.set_state(job.job_id, JobState.USER_KILLED, "while away")
        assert first.stream.last_id is not None
        second = Collector(url, campaign.tokens["watcher"], after=first.stream.last_id)
        try:
            expected = _log(be)
            wait_until(lambda: second.has(len(expected) - len(first.events)), what="the rest")
            _same(first.events + second.events, expected)
            assert {e.message for e in second.events} == {"while away"}
        finally:
            second.close()
        # The header itself, as a browser sends it on reconnecting.
        headers = {
            "Authorization": f"Bearer {campaign.tokens['watcher']}",
            "Last-Event-ID": str(expected[-2].id),
        }
        body = httpx.get(f"{url}/events/stream?after=0&follow=false", headers=headers).text
        assert f"id: {expected[-1].id}\n" in body and f"id: {expected[-2].id}\nevent" not in body


def test_a_stream_outlives_a_server_restart(campaign: Campaign) -> None:
    stream = None
    try:
        with campaign.server() as url:
            port = int(url.split(":")[2].split("/")[0])
            with contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be:
                add_app(be, "A", "true")
                jobs = add_jobs(be, "A", *({"name": f"j{i}"} for i in range(3)))
                stream = Collector(url, campaign.tokens["watcher"], after=0)
                wait_until(lambda: stream.has(len(_log(be))), what="the first events")
            stopping = time.monotonic()
        # Stopped with a stream open: the server ends it rather than wait on it.
        assert time.monotonic() - stopping < 5
        local = open_local_backend(load_site(campaign.served), retry=False)
        try:  # changes while the server is down, straight into the database
            for job in jobs:
                local.set_state(job.job_id, JobState.USER_KILLED, "while the server was down")
        finally:
            local.close()
        with (
            campaign.server(port=port) as url,
            contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be,
        ):
            expected = _log(be)
            wait_until(lambda: stream.has(len(expected)), what="the events after the restart")
            _same(stream.events, expected)
            assert stream.stream.connections >= 2
            be.note_jobs([jobs[0].job_id], "after the restart")
            wait_until(lambda: stream.has(len(expected) + 1), what="a live event again")
            assert stream.events[-1].message == "after the restart"
    finally:
        if stream is not None:
            stream.close()


def test_viewers_may_stream_and_nobody_else(campaign: Campaign) -> None:
    with campaign.server() as url:
        for token, status in (
            (campaign.tokens["watcher"], 200),
            ("not-a-token", 401),
            (campaign.tokens["stranger"], 403),
        ):
            headers = {"Authorization": f"Bearer {token}"}
            with httpx.stream("GET", f"{url}/events/stream", headers=headers) as response:
                assert response.status_code == status
                if status == 200:
                    assert next(response.iter_lines()) == "retry: 2000"
        assert httpx.get(f"{url}/events/stream").status_code == 401
        with (
            contextlib.closing(RemoteBackend(url, campaign.tokens["stranger"])) as stranger,
            pytest.raises(AccessDenied),  # permanent: the client does not retry it
        ):
            next(iter(EventStream(stranger)))


def test_streams_give_their_slot_back_when_the_client_leaves(campaign: Campaign) -> None:
    """More streams than the server's limit (256), one after another: each must free its slot
    when its client disconnects, or the later ones would be refused (503)."""
    with campaign.server() as url:
        headers = {"Authorization": f"Bearer {campaign.tokens['watcher']}"}
        with httpx.Client(headers=headers) as client:
            for _ in range(300):
                with client.stream("GET", f"{url}/events/stream") as response:
                    assert response.status_code == 200
                    assert next(response.iter_lines()) == "retry: 2000"


def _cli_env(campaign: Campaign, url: str) -> dict[str, str]:
    return {
        **os.environ,
        "BALSAM_DB_PATH": str(campaign.compute),
        "BALSAM_URL": url,
        "BALSAM_TOKEN": campaign.tokens["watcher"],
    }


@contextlib.contextmanager
def _cli(argv: list[str], env: dict[str, str]) -> Iterator[tuple[subprocess.Popen[str], list[str]]]:
    """``balsam ARGV`` in the background, its stdout lines collected as they come."""
    with subprocess.Popen(
        [str(BALSAM), *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env
    ) as proc:
        lines: list[str] = []
        reader = threading.Thread(target=lambda: lines.extend(proc.stdout or []), daemon=True)
        reader.start()
        try:
            yield proc, lines
        finally:
            if proc.poll() is None:
                proc.kill()
            reader.join(timeout=10)


def test_ls_watch_over_the_server_redraws_when_a_job_changes(campaign: Campaign) -> None:
    with (
        campaign.server() as url,
        contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be,
    ):
        add_app(be, "A", "true")
        add_jobs(be, "A", {"name": "first"})
        # A long interval: a second frame can only come from the stream.
        with _cli(["ls", "--watch", "--interval", "600"], _cli_env(campaign, url)) as (proc, lines):
            wait_until(lambda: any("first" in line for line in lines), what="the first frame")

            def frames() -> int:
                return sum(line.startswith("── balsam ls at") for line in lines)

            assert frames() == 1
            add_jobs(be, "A", {"name": "second"})
            wait_until(lambda: any("second" in line for line in lines), what="a redraw")
            assert frames() >= 2
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""


def test_events_follow_over_the_server_prints_changes_as_they_happen(campaign: Campaign) -> None:
    with (
        campaign.server() as url,
        contextlib.closing(RemoteBackend(url, campaign.tokens["alice"])) as be,
    ):
        add_app(be, "A", "true")
        (job,) = add_jobs(be, "A", {"name": "j", "workflow": "w"})
        env = _cli_env(campaign, url)
        after = str(be.change_marker())  # the creation is not printed
        with _cli(["events", "--follow", "--wf", "w", "--after", after], env) as (proc, lines):
            add_jobs(be, "A", {"name": "other", "workflow": "elsewhere"})
            be.set_state(job.job_id, JobState.USER_KILLED, "stopped by hand")
            wait_until(lambda: any("stopped by hand" in line for line in lines), what="the event")
            proc.send_signal(signal.SIGINT)
            assert proc.wait(timeout=30) == 0
            assert proc.stderr is not None and proc.stderr.read() == ""
        (printed,) = [line for line in lines if line.strip()]
        assert job.job_id[:8] in printed and "PREPROCESSED -> USER_KILLED" in printed
        done = subprocess.run(
            [str(BALSAM), "events", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        got = [StreamEvent.model_validate_json(line) for line in done.stdout.splitlines()]
        assert got == _log(be)
