"""The launcher's process plumbing, on real processes, pipes and sockets of this host.

Guard, process marks, the worker wire format, Slurm's time left, the session lease (over a
small recording backend of this file) and the children the launcher spawns.
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import pytest

from balsam.backends.base import Backend
from balsam.config import LauncherSettings
from balsam.errors import BalsamError, DatabaseError, DatabaseUnavailable, NotFound
from balsam.launcher import wire
from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.lease import Lease
from balsam.platform.processes import (
    MARK_VARIABLE,
    kill_marked,
    launcher_mark,
    marked_pids,
    process_alive,
    process_start_time,
)
from balsam.platform.walltime import allocation_minutes_left, parse_slurm_duration
from balsam.schemas.sessions import SessionOut

KILLED = -signal.SIGKILL
Spawn = Callable[..., subprocess.Popen[bytes]]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Starts ``sleep 60`` (or ``argv``) in a session of its own; kills what is left after."""
    started: list[subprocess.Popen[bytes]] = []

    def start(
        argv: Sequence[str] = ("sleep", "60"), env: Mapping[str, str] | None = None
    ) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(list(argv), start_new_session=True, env=env)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)


def dead_pid() -> int:
    """The pid of a child that exited and was reaped: no process has it now."""
    with subprocess.Popen(["true"]) as proc:
        proc.wait(timeout=10)
    return proc.pid


def still_running(proc: subprocess.Popen[bytes], seconds: float = 0.5) -> bool:
    """Whether ``proc`` is still running ``seconds`` from now."""
    try:
        proc.wait(timeout=seconds)
    except subprocess.TimeoutExpired:
        return True
    return False


def gone(pid: int) -> bool:
    """No process ``pid``, or only its zombie (not our child, so we cannot wait for it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def eventually(check: Callable[[], bool], seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


# ---- the worker ---------------------------------------------------------------------------


@pytest.fixture
def worker(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], socket.socket]]:
    """A real worker process on a socket pair, as a launcher starts its local worker."""
    mine, theirs = socket.socketpair()
    env = {**os.environ, "BALSAM_WORKER_FD": str(theirs.fileno())}
    proc = subprocess.Popen(
        [sys.executable, "-m", "balsam.launcher.worker"],
        env=env,
        pass_fds=(theirs.fileno(),),
        start_new_session=True,
    )
    theirs.close()
    mine.settimeout(10)
    yield proc, mine
    if mine.fileno() >= 0:
        mine.close()
    if proc.poll() is None:
        proc.kill()
    proc.wait(timeout=10)


class Inbox(wire.LineReader):
    """A reader that keeps what arrived beyond the message asked for."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(sock)
        self.kept: list[wire.Message] = []

    def next_any(self) -> wire.Message:
        """The next message other than ``hello``."""
        while True:
            while self.kept:
                message = self.kept.pop(0)
                if message["op"] != "hello":
                    return message
            messages = self.read()
            assert messages is not None, "the worker closed the connection"
            self.kept.extend(messages)

    def next(self, op: str) -> wire.Message:
        """The next message with ``op``, skipping others (the worker says hello first)."""
        while True:
            while self.kept:
                message = self.kept.pop(0)
                if message["op"] == op:
                    return message
            messages = self.read()
            assert messages is not None, f"the worker closed the connection before {op!r}"
            self.kept.extend(messages)


def next_message(reader: Inbox, op: str) -> wire.Message:
    """The next message with ``op`` from the worker."""
    return reader.next(op)


def run_message(key: int, argv: list[str], tmp_path: Path, **extra: object) -> wire.Message:
    out = tmp_path / f"{key}.out"
    return {"op": "run", "key": key, "argv": argv, "cwd": str(tmp_path), "out": str(out),
            "env": {}, "cpus": [], **extra}  # fmt: skip


def test_the_worker_starts_commands_and_reports_their_exits(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    _, sock = worker
    reader = Inbox(sock)
    hello = next_message(reader, "hello")
    assert hello["cpus"] == len(os.sched_getaffinity(0))
    env = {"GREETING": "hi"}
    wire.send(sock, run_message(1, ["sh", "-c", "echo $GREETING; exit 3"], tmp_path, env=env))
    started = next_message(reader, "started")
    assert started["key"] == 1 and started["pid"] > 0
    assert next_message(reader, "exited") == {"op": "exited", "key": 1, "code": 3}
    assert (tmp_path / "1.out").read_text() == "hi\n"
    wire.send(sock, run_message(2, ["no-such-program-xyz"], tmp_path))
    failed = next_message(reader, "failed")
    assert failed["key"] == 2 and "no-such-program-xyz" in failed["error"]


def test_a_command_holds_no_file_of_its_worker(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    """Only stdin, stdout and stderr: not the worker's socket, selector or process fds."""
    _, sock = worker
    reader = Inbox(sock)
    listing = "ls /proc/self/fd"
    wire.send(sock, run_message(7, ["sh", "-c", f"{listing} | sort -n"], tmp_path))
    assert next_message(reader, "exited")["code"] == 0
    # sh's own (0, 1, 2), and the pipe and the directory that ls reads while it lists.
    fds = [int(line) for line in (tmp_path / "7.out").read_text().split()]
    assert fds[:3] == [0, 1, 2] and len(fds) <= 5, fds


def test_the_worker_signals_a_command_group_when_asked(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    _, sock = worker
    reader = Inbox(sock)
    wire.send(sock, run_message(5, ["sleep", "60"], tmp_path))
    next_message(reader, "started")
    wire.send(sock, {"op": "signal", "key": 5, "sig": int(signal.SIGTERM)})
    assert next_message(reader, "exited") == {"op": "exited", "key": 5, "code": -signal.SIGTERM}


def test_a_queued_run_starts_the_moment_the_one_it_follows_exits(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    _, sock = worker
    reader = Inbox(sock)
    wire.send(sock, run_message(1, ["sleep", "0.3"], tmp_path))
    wire.send(sock, run_message(2, ["true"], tmp_path, after=1))
    order = [(m["op"], m["key"]) for m in (reader.next_any() for _ in range(4))]
    assert order == [("started", 1), ("exited", 1), ("started", 2), ("exited", 2)]


def test_a_queued_run_signalled_before_it_starts_is_cancelled(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    _, sock = worker
    reader = Inbox(sock)
    wire.send(sock, run_message(3, ["sleep", "60"], tmp_path))
    wire.send(sock, run_message(4, ["true"], tmp_path, after=3))
    next_message(reader, "started")
    wire.send(sock, {"op": "signal", "key": 4, "sig": int(signal.SIGTERM)})
    assert next_message(reader, "cancelled") == {"op": "cancelled", "key": 4}
    wire.send(sock, {"op": "signal", "key": 3, "sig": int(signal.SIGKILL)})
    assert next_message(reader, "exited") == {"op": "exited", "key": 3, "code": KILLED}
    # Nothing follows: the cancelled run never starts.
    wire.send(sock, run_message(5, ["true"], tmp_path))
    assert next_message(reader, "started")["key"] == 5


def test_a_run_queued_behind_one_that_already_ended_starts_at_once(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    _, sock = worker
    reader = Inbox(sock)
    wire.send(sock, run_message(6, ["true"], tmp_path))
    assert next_message(reader, "exited")["key"] == 6
    wire.send(sock, run_message(7, ["true"], tmp_path, after=6))
    assert next_message(reader, "started")["key"] == 7


def test_a_worker_cut_off_from_its_launcher_kills_its_commands(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    """What a worker sees of a launcher killed with SIGKILL: the connection just ends."""
    proc, sock = worker
    reader = Inbox(sock)
    wire.send(sock, run_message(7, ["sh", "-c", "sleep 60 & sleep 60"], tmp_path))
    pid = next_message(reader, "started")["pid"]
    sock.close()
    assert proc.wait(timeout=10) == 0
    assert eventually(lambda: gone(pid))


def test_a_worker_ignores_terminal_and_batch_signals_but_its_jobs_do_not(
    worker: tuple[subprocess.Popen[bytes], socket.socket], tmp_path: Path
) -> None:
    proc, sock = worker
    reader = Inbox(sock)
    next_message(reader, "hello")
    wire.send(sock, run_message(8, ["sleep", "60"], tmp_path))
    pid = next_message(reader, "started")["pid"]
    proc.send_signal(signal.SIGTERM)
    assert still_running(cast(subprocess.Popen[bytes], proc))
    # The job's SIGTERM is not ignored (a worker's caught signals reset at exec).
    os.kill(pid, signal.SIGTERM)
    assert next_message(reader, "exited") == {"op": "exited", "key": 8, "code": -signal.SIGTERM}


# ---- processes ---------------------------------------------------------------------------


def test_launcher_mark_names_host_pid_and_session() -> None:
    assert launcher_mark("nid00012", 4242, 7) == "nid00012:4242:7"


def test_start_time_of_a_process_started_now(spawn: Spawn) -> None:
    before = time.time()
    child = spawn()
    after = time.time()
    started = process_start_time(child.pid)
    assert started is not None
    # /proc/stat's boot time is whole seconds: allow for that.
    assert before - 1.5 <= started <= after + 1.5


def test_start_time_with_a_command_name_holding_parentheses(tmp_path: Path, spawn: Spawn) -> None:
    odd = tmp_path / "a) (b c"
    odd.symlink_to("/bin/sleep")
    before = time.time()
    child = spawn([str(odd), "60"])
    started = process_start_time(child.pid)
    assert started is not None and abs(started - before) < 2
    assert process_alive(child.pid, datetime.now(UTC))


def test_this_process_is_alive_for_a_session_it_opened_now() -> None:
    assert process_alive(os.getpid(), datetime.now(UTC))


def test_a_pid_reused_after_the_session_opened_is_not_alive() -> None:
    # The session was opened an hour ago: this process started later, so it cannot be its owner.
    assert not process_alive(os.getpid(), datetime.now(UTC) - timedelta(hours=1))


def test_a_pid_nobody_has_is_not_alive() -> None:
    pid = dead_pid()
    assert process_start_time(pid) is None
    assert not process_alive(pid, datetime.now(UTC))
    assert not process_alive(0, datetime.now(UTC))
    assert not process_alive(-1, datetime.now(UTC))


def test_a_zombie_is_not_alive() -> None:
    with subprocess.Popen(["true"]) as child:
        # Wait for the exit without reaping: the child stays a zombie until child.wait().
        os.waitid(os.P_PID, child.pid, os.WEXITED | os.WNOWAIT)
        assert process_start_time(child.pid) is not None
        assert not process_alive(child.pid, datetime.now(UTC))
        assert child.wait(timeout=10) == 0


def test_kill_marked_kills_exactly_the_marked_processes(spawn: Spawn) -> None:
    mark = launcher_mark(f"host-{uuid.uuid4().hex[:8]}", 1234, 5)
    # A mark that starts with ours is another session's (session 56, not 5).
    other = mark + "6"
    marked = [spawn(env={**os.environ, MARK_VARIABLE: mark}) for _ in range(2)]
    unmarked = spawn(env={**os.environ, MARK_VARIABLE: other})
    # Waited on: once in a loaded full run one of two just-started processes was not found
    # on the first read of /proc (not reproduced alone; noted in the session's closing note).
    expected = sorted(p.pid for p in marked)
    deadline = time.monotonic() + 10
    while sorted(marked_pids(mark)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sorted(marked_pids(mark)) == expected
    assert kill_marked(mark) == 2
    assert [p.wait(timeout=10) for p in marked] == [KILLED, KILLED]
    assert still_running(unmarked)
    assert marked_pids(mark) == []
    assert kill_marked(mark) == 0


# ---- wire --------------------------------------------------------------------------------


def test_encode_is_one_line_that_decodes_back() -> None:
    message = {"op": "run", "key": 3, "argv": ["echo", "a\nb"], "env": {"X": "é"}}
    line = wire.encode(message)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert wire.decode(line.rstrip(b"\n")) == message


@pytest.mark.parametrize("line", [b"not json", b"[1, 2]", b'"op"', b'{"key": 1}', b'{"op": 5}'])
def test_decode_refuses_what_is_not_a_message(line: bytes) -> None:
    with pytest.raises(wire.WireError):
        wire.decode(line)


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    """A connected pair: the reader's end is non-blocking, as in the launcher."""
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    with reader, writer:
        yield reader, writer


def read_some(lines: wire.LineReader) -> list[wire.Message] | None:
    """What one read returns once something has arrived."""
    with selectors.DefaultSelector() as selector:
        selector.register(lines.sock, selectors.EVENT_READ)
        assert selector.select(timeout=10)
    return lines.read()


def test_reader_joins_a_message_split_across_sends(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    lines = wire.LineReader(reader)
    assert lines.read() == []  # nothing yet: no block, no message
    data = wire.encode({"op": "exited", "key": 1, "code": 0})
    writer.sendall(data[:5])
    assert read_some(lines) == []
    writer.sendall(data[5:12])
    assert read_some(lines) == []
    writer.sendall(data[12:])
    assert read_some(lines) == [{"op": "exited", "key": 1, "code": 0}]


def test_reader_splits_several_messages_in_one_send(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    lines = wire.LineReader(reader)
    first, second = {"op": "hello", "rank": 0}, {"op": "failed", "key": 2, "why": "no such file"}
    third = wire.encode({"op": "bye"})
    writer.sendall(wire.encode(first) + b"\n" + wire.encode(second) + third[:4])
    assert read_some(lines) == [first, second]
    writer.sendall(third[4:])  # the rest of "bye", then one more
    wire.send(writer, {"op": "x"})
    got: list[wire.Message] = []
    while len(got) < 2:
        more = read_some(lines)
        assert more is not None
        got += more
    assert got == [{"op": "bye"}, {"op": "x"}]


def test_reader_returns_none_when_the_peer_closes(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    lines = wire.LineReader(reader)
    writer.sendall(wire.encode({"op": "bye"}))
    writer.close()
    assert read_some(lines) == [{"op": "bye"}]
    assert read_some(lines) is None


def test_reader_refuses_an_overlong_line(
    pair: tuple[socket.socket, socket.socket], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(wire, "MAX_LINE", 32)
    reader, writer = pair
    lines = wire.LineReader(reader)
    writer.sendall(b'{"op":"run","argv":["' + b"x" * 40)
    with pytest.raises(wire.WireError, match="too long"):
        read_some(lines)


def test_reader_refuses_a_line_that_is_not_a_message(
    pair: tuple[socket.socket, socket.socket],
) -> None:
    reader, writer = pair
    writer.sendall(b"GET / HTTP/1.0\n")
    with pytest.raises(wire.WireError):
        read_some(wire.LineReader(reader))


# ---- walltime ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "minutes"),
    [
        ("1-02:03:04", 1440 + 120 + 3 + 4 / 60),
        ("02:03:04", 120 + 3 + 4 / 60),
        ("03:04", 3 + 4 / 60),
        ("45", 0.75),
        (" 10:00\n", 10.0),
        ("0:00", 0.0),
    ],
)
def test_slurm_durations(text: str, minutes: float) -> None:
    assert parse_slurm_duration(text) == pytest.approx(minutes)


@pytest.mark.parametrize("text", ["UNLIMITED", "unlimited", "INVALID", "NOT_SET", "N/A", "", " "])
def test_slurm_durations_without_a_limit(text: str) -> None:
    assert parse_slurm_duration(text) is None


@pytest.mark.parametrize(
    "text", ["soon", "1:2:3:4", "x-01:02:03", "1-03:04", "1-", "01:xx", "1.5", "-1-00:00:00"]
)
def test_slurm_duration_garbage_is_a_value_error(text: str) -> None:
    with pytest.raises(ValueError, match="not a Slurm duration"):
        parse_slurm_duration(text)


def fake_squeue(bin_dir: Path, body: str) -> Path:
    """A ``squeue`` that records its arguments in ``bin_dir/args`` and runs ``body``."""
    bin_dir.mkdir(exist_ok=True)
    script = bin_dir / "squeue"
    script.write_text(f"#!/bin/sh\nprintf '%s\\n' \"$*\" > '{bin_dir}/args'\n{body}\n")
    script.chmod(0o755)
    return bin_dir / "args"


def test_time_left_asks_squeue_about_this_job(tmp_path: Path) -> None:
    args = fake_squeue(tmp_path / "bin", "echo 1:30:00")
    environ = {"SLURM_JOB_ID": "4242", "PATH": str(tmp_path / "bin")}
    assert allocation_minutes_left(environ) == 90.0
    assert args.read_text().split() == ["-h", "-j", "4242", "-o", "%L"]


def test_no_time_left_outside_a_slurm_job(tmp_path: Path) -> None:
    args = fake_squeue(tmp_path / "bin", "echo 1:30:00")
    assert allocation_minutes_left({"PATH": str(tmp_path / "bin")}) is None
    assert not args.exists()


def test_no_time_left_without_squeue(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert allocation_minutes_left({"SLURM_JOB_ID": "1", "PATH": str(tmp_path / "empty")}) is None


@pytest.mark.parametrize(
    "body", ["echo UNLIMITED", "echo whenever", "true", "echo 'no such job' >&2; exit 1"]
)
def test_no_time_left_when_squeue_has_no_answer(tmp_path: Path, body: str) -> None:
    fake_squeue(tmp_path / "bin", body)
    assert allocation_minutes_left({"SLURM_JOB_ID": "1", "PATH": str(tmp_path / "bin")}) is None


# ---- lease -------------------------------------------------------------------------------

SETTINGS = LauncherSettings(lease_seconds=30, heartbeat_seconds=5, kill_poll_seconds=1)
OWN_ID = 7


class SessionCalls:
    """The session calls a Lease makes, recorded; ``failures`` makes a call raise."""

    def __init__(self, sessions: Sequence[SessionOut] = ()) -> None:
        self.sessions = list(sessions)
        self.killed = ["job-a"]
        self.failures: dict[str, BalsamError] = {}
        self.calls: list[tuple[str, tuple[object, ...]]] = []

    def _call(self, name: str, *args: object) -> None:
        self.calls.append((name, args))
        if name in self.failures:
            raise self.failures[name]

    def names(self) -> list[str]:
        return [name for name, _ in self.calls]

    def open_session(
        self,
        label: str,
        hostname: str,
        pid: int,
        client_key: str | None = None,
        batch_job: str | None = None,
    ) -> SessionOut:
        self._call("open_session", label, hostname, pid, client_key, batch_job)
        return session(OWN_ID, hostname, pid)

    def heartbeat(self, session_id: int) -> list[str]:
        self._call("heartbeat", session_id)
        return list(self.killed)

    def ended_held_jobs(self, session_id: int) -> list[str]:
        self._call("ended_held_jobs", session_id)
        return list(self.killed)

    def list_sessions(self) -> list[SessionOut]:
        self._call("list_sessions")
        return list(self.sessions)

    def expire_sessions(self, lease_seconds: float, dead: list[int] | None = None) -> list[int]:
        self._call("expire_sessions", lease_seconds, dead)
        return list(dead or [])


def session(
    id_: int, hostname: str, pid: int, heartbeat_age: float = 0.0, age: float = 0.0
) -> SessionOut:
    now = datetime.now(UTC)
    return SessionOut(
        id=id_,
        label="peer",
        hostname=hostname,
        pid=pid,
        heartbeat=now - timedelta(seconds=heartbeat_age),
        created_at=now - timedelta(seconds=age),
    )


def opened(calls: SessionCalls, now: float = 100.0, hostname: str = "here") -> Lease:
    lease = Lease(cast(Backend, calls), SETTINGS, "test", hostname)
    lease.open(now)
    calls.calls.clear()
    return lease


def test_open_starts_a_session_for_this_process() -> None:
    calls = SessionCalls()
    lease = Lease(cast(Backend, calls), SETTINGS, "test", "nid01")
    lease.open(100.0)
    ((name, (label, host, pid, key, batch_job)),) = calls.calls
    assert (name, label, host, pid) == ("open_session", "test", "nid01", os.getpid())
    assert batch_job is None
    assert isinstance(key, str) and len(key) == 32
    assert lease.mark == launcher_mark("nid01", os.getpid(), OWN_ID)
    assert lease.due_at(polling=False) == 105.0
    assert lease.due_at(polling=True) == 101.0


def test_a_lease_opens_its_sessions_in_its_batch_job() -> None:
    calls = SessionCalls()
    Lease(cast(Backend, calls), SETTINGS, "test", "nid01", batch_job="4242").open(100.0)
    ((_name, args),) = calls.calls
    assert args[-1] == "4242"


def test_an_open_that_failed_is_repeated_with_the_same_key() -> None:
    """The first open may have committed: its repeat must name the same session."""
    calls = SessionCalls()
    calls.failures["open_session"] = DatabaseUnavailable("connection lost")
    lease = Lease(cast(Backend, calls), SETTINGS, "test", "nid01")
    with pytest.raises(DatabaseUnavailable):
        lease.open(100.0)
    del calls.failures["open_session"]
    lease.open(101.0)
    first, again = (args[3] for _, args in calls.calls)
    assert first == again
    lease.open(102.0)
    assert calls.calls[-1][1][3] != first


def test_tick_renews_only_when_the_heartbeat_is_due() -> None:
    calls = SessionCalls()
    lease = opened(calls)
    assert lease.tick(104.9, polling=False).killed == []
    assert calls.calls == []
    news = lease.tick(105.0, polling=False)
    assert calls.names() == ["heartbeat", "list_sessions", "expire_sessions"]
    assert calls.calls[0] == ("heartbeat", (OWN_ID,))
    assert news.killed == ["job-a"] and not news.lost and not news.fence
    calls.calls.clear()
    lease.tick(109.9, polling=False)
    assert calls.calls == []
    lease.tick(110.0, polling=False)
    assert calls.names()[0] == "heartbeat"


def test_tick_polls_for_kills_only_while_jobs_run_and_when_due() -> None:
    calls = SessionCalls()
    lease = opened(calls)
    lease.tick(101.0, polling=False)
    assert calls.calls == []
    news = lease.tick(101.0, polling=True)
    assert calls.calls == [("ended_held_jobs", (OWN_ID,))]
    assert news.killed == ["job-a"]
    lease.tick(101.5, polling=True)
    assert calls.names() == ["ended_held_jobs"]
    lease.tick(102.0, polling=True)
    assert calls.names() == ["ended_held_jobs"] * 2
    calls.calls.clear()
    # The heartbeat answers the same question: no separate poll when both are due.
    lease.tick(105.0, polling=True)
    assert "ended_held_jobs" not in calls.names() and "heartbeat" in calls.names()
    calls.calls.clear()
    lease.tick(105.5, polling=True)
    assert calls.calls == []
    lease.tick(106.0, polling=True)
    assert calls.names() == ["ended_held_jobs"]


def test_unreachable_database_fences_only_after_fence_after_seconds() -> None:
    assert SETTINGS.fence_after_seconds == 20
    calls = SessionCalls()
    lease = opened(calls, now=0.0)
    calls.failures["heartbeat"] = DatabaseError("connection refused")
    for now in (5.0, 10.0, 15.0):
        news = lease.tick(now, polling=False)
        assert not news.fence and not news.lost
    assert lease.tick(20.0, polling=False).fence
    assert calls.names() == ["heartbeat"] * 4
    del calls.failures["heartbeat"]
    news = lease.tick(25.0, polling=False)
    assert not news.fence and news.killed == ["job-a"]
    # Renewed at 25: the clock to fencing starts again.
    calls.failures["heartbeat"] = DatabaseError("connection refused")
    assert not lease.tick(30.0, polling=False).fence
    assert lease.tick(45.0, polling=False).fence


def test_a_failing_kill_poll_also_counts_towards_fencing() -> None:
    calls = SessionCalls()
    lease = opened(calls, now=0.0)
    calls.failures["heartbeat"] = DatabaseError("timeout")
    calls.failures["ended_held_jobs"] = DatabaseError("timeout")
    assert not lease.tick(19.0, polling=True).fence
    assert lease.tick(20.0, polling=True).fence


def test_a_failing_database_does_not_make_the_loop_spin() -> None:
    calls = SessionCalls()
    lease = opened(calls, now=0.0)
    calls.failures["heartbeat"] = DatabaseError("down")
    calls.failures["ended_held_jobs"] = DatabaseError("down")
    lease.tick(5.0, polling=True)
    lease.tick(5.0, polling=True)
    assert calls.names() == ["heartbeat"]
    assert lease.due_at(polling=True) == 6.0
    lease.tick(6.0, polling=True)
    lease.tick(6.0, polling=True)
    assert calls.names() == ["heartbeat", "ended_held_jobs"]
    assert lease.due_at(polling=True) == 7.0


@pytest.mark.parametrize(("polling", "now"), [(False, 105.0), (True, 101.0)])
def test_an_expired_session_is_news_lost(polling: bool, now: float) -> None:
    calls = SessionCalls()
    lease = opened(calls)
    calls.failures["heartbeat"] = NotFound("launcher session 7 has expired")
    calls.failures["ended_held_jobs"] = NotFound("launcher session 7 has expired")
    news = lease.tick(now, polling=polling)
    assert news.lost and not news.fence


def test_recover_peers_names_only_dead_launchers_of_this_host() -> None:
    host = f"host-{uuid.uuid4().hex[:8]}"
    gone_pid = dead_pid()
    calls = SessionCalls(
        [
            session(OWN_ID, host, os.getpid()),
            session(11, host, gone_pid),
            session(12, host, os.getpid()),
            session(13, "another-host", gone_pid),
        ]
    )
    lease = opened(calls, hostname=host)
    assert lease.recover_peers() == [11]
    assert calls.calls == [("list_sessions", ()), ("expire_sessions", (25.0, [11]))]


def test_recover_peers_kills_what_dead_or_hung_launchers_here_left(spawn: Spawn) -> None:
    host = f"host-{uuid.uuid4().hex[:8]}"
    gone_pid = dead_pid()
    dead = session(11, host, gone_pid)
    hung = session(14, host, os.getpid(), heartbeat_age=60)
    live = session(12, host, os.getpid())
    elsewhere = session(13, "another-host", gone_pid)

    def left_by(s: SessionOut) -> subprocess.Popen[bytes]:
        mark = launcher_mark(s.hostname, s.pid, s.id)
        return spawn(env={**os.environ, MARK_VARIABLE: mark})

    procs = {s.id: left_by(s) for s in (dead, hung, live, elsewhere)}
    calls = SessionCalls([dead, hung, live, elsewhere])
    lease = opened(calls, hostname=host)
    assert lease.recover_peers() == [11]
    assert procs[11].wait(timeout=10) == KILLED
    assert procs[14].wait(timeout=10) == KILLED
    assert still_running(procs[12])
    assert procs[13].poll() is None


# ---- children ----------------------------------------------------------------------------


@pytest.fixture
def children() -> Iterator[ChildProcesses]:
    """Children on a real selector; whatever a test leaves running is killed and reaped."""
    with selectors.DefaultSelector() as selector:
        kids = ChildProcesses(selector)
        yield kids
        for child in kids:
            kids.signal(child, signal.SIGKILL)
            kids.reap(child)


def exited(kids: ChildProcesses, timeout: float = 10.0) -> list[Child]:
    """Children whose pidfd became readable (they exited) within ``timeout``."""
    return [key.data for key, _ in kids.selector.select(timeout=timeout)]


def start(kids: ChildProcesses, tmp_path: Path, argv: list[str], cpus: Sequence[int] = ()) -> Child:
    return kids.spawn("job1", Step.RUN, argv, tmp_path, os.environ, tmp_path / "job.out", cpus=cpus)


def test_an_exited_child_wakes_the_selector_and_reaps_its_code(
    children: ChildProcesses, tmp_path: Path
) -> None:
    child = start(children, tmp_path, ["/bin/sh", "-c", "echo out; echo err >&2; exit 3"])
    assert len(children) == 1
    assert exited(children) == [child]
    assert children.reap(child) == 3
    assert len(children) == 0 and children.selector.get_map() == {}
    assert (tmp_path / "job.out").read_text().split() == ["out", "err"]


def test_a_child_runs_in_its_own_directory_and_session(
    children: ChildProcesses, tmp_path: Path
) -> None:
    child = start(children, tmp_path, ["/bin/sh", "-c", 'pwd; echo "$$"; sleep 60'])
    assert eventually(lambda: len((tmp_path / "job.out").read_text().split()) == 2)
    cwd, pid = (tmp_path / "job.out").read_text().split()
    assert Path(cwd).resolve() == tmp_path.resolve() and int(pid) == child.pid
    assert os.getsid(child.pid) == child.pid != os.getsid(0)


def test_a_child_bound_to_one_cpu(children: ChildProcesses, tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    cpu = max(before)
    child = start(children, tmp_path, ["sleep", "5"], cpus=[cpu])
    status = Path(f"/proc/{child.pid}/status").read_text()
    (allowed,) = [line for line in status.splitlines() if line.startswith("Cpus_allowed_list:")]
    assert allowed.split(":")[1].strip() == str(cpu)
    assert os.sched_getaffinity(0) == before
    children.terminate(child, grace=5, now=time.monotonic())
    assert exited(children) == [child]
    assert children.reap(child) == -signal.SIGTERM


def test_a_spawn_that_fails_restores_the_affinity(children: ChildProcesses, tmp_path: Path) -> None:
    before = os.sched_getaffinity(0)
    with pytest.raises(OSError):
        start(children, tmp_path, [str(tmp_path / "no-such-program")], cpus=[max(before)])
    assert os.sched_getaffinity(0) == before
    assert len(children) == 0


def test_terminate_then_escalate_kills_after_the_grace(
    children: ChildProcesses, tmp_path: Path
) -> None:
    child = start(children, tmp_path, ["/bin/sh", "-c", "trap '' TERM; echo ready; exec sleep 60"])
    assert eventually(lambda: (tmp_path / "job.out").read_text() == "ready\n")
    children.terminate(child, grace=0.5, now=1000.0)
    assert children.next_kill_at() == 1000.5
    children.escalate(1000.4)
    assert exited(children, timeout=0.3) == []  # SIGTERM is ignored, no SIGKILL yet
    children.escalate(1000.5)
    assert children.next_kill_at() is None
    assert exited(children) == [child]
    assert children.reap(child) == KILLED


# ---- working directories made ahead ---------------------------------------------------------


class _Holder:
    """A stand-in for a launcher's job: only the mark the maker sets."""

    def __init__(self) -> None:
        self.workdir_made = False


def test_directories_are_made_ahead_and_jobs_marked(tmp_path: Path) -> None:
    from balsam.launcher.workdirs import DirectoryMaker

    maker = DirectoryMaker()
    holders = [_Holder() for _ in range(50)]
    try:
        for i, holder in enumerate(holders):
            maker.prepare(holder, tmp_path / "data" / f"j{i}")
        assert eventually(lambda: all(h.workdir_made for h in holders))
        assert all((tmp_path / "data" / f"j{i}").is_dir() for i in range(50))
    finally:
        maker.close()


def test_ensure_makes_a_directory_the_thread_has_not_made_yet(tmp_path: Path) -> None:
    from balsam.launcher.workdirs import DirectoryMaker

    holder = _Holder()
    path = tmp_path / "a" / "b"
    assert DirectoryMaker.ensure(holder, path) == path
    assert path.is_dir() and holder.workdir_made
    # A marked job costs no system call: a directory removed behind its back stays removed.
    path.rmdir()
    DirectoryMaker.ensure(holder, path)
    assert not path.exists()


def test_a_directory_that_cannot_be_made_leaves_the_job_unmarked(tmp_path: Path) -> None:
    from balsam.launcher.workdirs import DirectoryMaker

    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    maker = DirectoryMaker()
    holder, fine = _Holder(), _Holder()
    try:
        maker.prepare(holder, blocker / "job")
        maker.prepare(fine, tmp_path / "ok")
        assert eventually(lambda: fine.workdir_made)
        assert not holder.workdir_made
        with pytest.raises(NotADirectoryError):
            DirectoryMaker.ensure(holder, blocker / "job")
    finally:
        maker.close()
