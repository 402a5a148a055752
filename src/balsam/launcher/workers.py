"""The launcher's side of its workers: starting them and talking to them.

Every launcher starts a **local worker** (:mod:`balsam.launcher.worker`) beside it, connected
through a socket pair: it starts every command on the launcher's host. In serial mode the
launcher also listens on a TCP port and starts one **remote worker** per other node in a single
step of the MPI launcher (``srun``, ``mpiexec -ppn 1``, ``aprun -N 1``, ...), each with the
address and a random token in its environment. A remote worker connects, says ``hello`` with
the token and its node's name (or its rank in the step), and from then on its node takes jobs.
A connection without the right token is closed. A worker that goes away takes its node out of
the pool; the jobs it was running are reported lost (see :class:`FleetEvents`).
"""

from __future__ import annotations

import logging
import os
import secrets
import selectors
import socket
import subprocess
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from balsam.launcher.wire import LineReader, Message, WireError, encode
from balsam.platform.mpi import MpiLauncher, MpiRun

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 30.0
WORKER_ARGV = [sys.executable, "-m", "balsam.launcher.worker"]


class FleetEvents(Protocol):
    """What the launcher does when workers report."""

    def node_ready(self, index: int) -> None:
        """Node ``index`` has a worker and may take jobs."""
        ...

    def node_lost(self, link: WorkerLink) -> None:
        """A worker went away; the commands it ran are lost."""
        ...

    def run_started(self, key: int, pid: int) -> None:
        """A worker started the command under ``key`` as process ``pid``."""
        ...

    def run_exited(self, key: int, code: int) -> None:
        """The command under ``key`` exited with ``code``."""
        ...

    def run_failed(self, key: int, error: str, later: bool = False) -> None:
        """The command under ``key`` could not be started (``later``: for want of space on
        the node, not for anything the job did: it may start once space returns)."""
        ...

    def run_cancelled(self, key: int) -> None:
        """The queued command under ``key`` was taken off the worker's queue, never started."""
        ...


@dataclass(eq=False)
class WorkerLink:
    """A connected worker: the node it serves (None: the launcher's host, off the pool)."""

    index: int | None
    hostname: str
    sock: socket.socket
    reader: LineReader = field(init=False)
    alive: bool = True
    local: bool = False
    outbox: list[bytes] = field(default_factory=list)
    #: The fleet's set of links with something to write (so a flush visits only those).
    unsent: set[WorkerLink] | None = None

    def __post_init__(self) -> None:
        self.reader = LineReader(self.sock)

    def send(self, message: Message) -> None:
        """Queue one message; :meth:`flush` writes what is queued in one go."""
        if self.alive:
            self.outbox.append(encode(message))
            if self.unsent is not None:
                self.unsent.add(self)

    def flush(self) -> None:
        """Write the queued messages; a worker that cannot take them counts as gone."""
        if not self.outbox or not self.alive:
            return
        data, self.outbox = b"".join(self.outbox), []
        try:
            self.sock.sendall(data)
        except OSError as exc:
            log.warning("worker on %s unreachable: %s", self.hostname, exc)
            self.alive = False

    def run(
        self,
        key: int,
        argv: list[str],
        cwd: Path,
        env: Mapping[str, str],
        out: Path,
        cpus: tuple[int, ...] = (),
        after: int | None = None,
        makedirs: bool = False,
        header: str = "",
        files: Mapping[str, str] | None = None,
    ) -> None:
        """Ask the worker to start ``argv`` (its environment plus ``env``), at once or, with
        ``after``, as soon as the command under that key exits (``makedirs``: make ``cwd``
        first; ``header``: lines the output file starts with; ``files``: text files to write
        in ``cwd`` just before the start, by name)."""
        message = {"op": "run", "key": key, "argv": argv, "cwd": str(cwd), "env": dict(env)}
        message.update(out=str(out), cpus=list(cpus))
        if after is not None:
            message["after"] = after
        if makedirs:
            message["makedirs"] = True
        if header:
            message["header"] = header
        if files:
            message["files"] = dict(files)
        self.send(message)

    def send_signal(self, key: int, sig: int) -> None:
        """Signal the process group of the command under ``key``."""
        self.send({"op": "signal", "key": key, "sig": sig})


@dataclass(eq=False)
class _Pending:
    """A connection that has not said hello yet."""

    sock: socket.socket
    reader: LineReader


@dataclass(eq=False)
class _Step:
    """The MPI-launcher process that runs the remote workers."""

    popen: subprocess.Popen[bytes]
    pidfd: int


class WorkerFleet:
    """The launcher's workers: starts them, accepts remote ones, relays their messages."""

    def __init__(self, selector: selectors.BaseSelector, events: FleetEvents) -> None:
        self.selector = selector
        self.events = events
        self.token = secrets.token_hex(16)
        self.local: WorkerLink | None = None
        self.local_popen: subprocess.Popen[bytes] | None = None
        #: Links by node index: remote nodes, and the launcher's own node if it is one.
        self.links: dict[int, WorkerLink] = {}
        self.remote: dict[int, str] = {}
        self.listener: socket.socket | None = None
        self.step: _Step | None = None
        self.unsent: set[WorkerLink] = set()

    # ---- starting --------------------------------------------------------------------------

    def start_local(
        self, index: int | None, hostname: str, env: Mapping[str, str], log_path: Path
    ) -> WorkerLink:
        """Start the worker on this host, connected through a socket pair."""
        mine, theirs = socket.socketpair()
        with log_path.open("ab") as out:
            # Its own session: a Ctrl-C meant for the launcher must not reach it.
            self.local_popen = subprocess.Popen(
                WORKER_ARGV,
                env={**env, "BALSAM_WORKER_FD": str(theirs.fileno())},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                pass_fds=(theirs.fileno(),),
                start_new_session=True,
            )
        theirs.close()
        mine.settimeout(SEND_TIMEOUT_SECONDS)
        link = WorkerLink(index, hostname, mine, local=True, unsent=self.unsent)
        self.local = link
        if index is not None:
            self.links[index] = link
        self.selector.register(mine, selectors.EVENT_READ, link)
        return link

    def start_remote(
        self,
        remote: dict[int, str],
        address: str,
        mpi: MpiLauncher,
        cpus_per_node: int,
        env: Mapping[str, str],
        log_path: Path,
    ) -> subprocess.Popen[bytes]:
        """Listen on ``address`` and start one worker on each remote node in one MPI step."""
        self.remote = dict(remote)
        self.listener = socket.create_server((address, 0), backlog=max(len(remote), 8))
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self)
        host, port = self.listener.getsockname()[:2]
        hosts = [self.remote[i] for i in sorted(self.remote)]
        # The worker's step must own every CPU of its node: its jobs run inside it.
        run = MpiRun(argv=WORKER_ARGV, hosts=hosts, threads_per_rank=max(cpus_per_node, 1))
        argv = mpi.command(run)
        log.info("starting workers on %s: %s", ",".join(hosts), " ".join(argv))
        secret = {"BALSAM_WORKER_ADDRESS": f"{host}:{port}", "BALSAM_WORKER_TOKEN": self.token}
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                env={**env, **secret},
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        pidfd = os.pidfd_open(popen.pid)
        self.step = _Step(popen, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, self.step)
        return popen

    # ---- events ----------------------------------------------------------------------------

    def owns(self, data: object) -> bool:
        """Whether a selector key's data belongs to the fleet."""
        return data is self or isinstance(data, (_Pending, WorkerLink, _Step))

    def handle(self, data: object) -> None:
        """React to a readable listener, connection or step exit."""
        if data is self:
            self._accept()
        elif isinstance(data, _Pending):
            self._greet(data)
        elif isinstance(data, WorkerLink):
            self._relay(data)
        elif isinstance(data, _Step):
            self._step_exited(data)

    def _accept(self) -> None:
        assert self.listener is not None
        try:
            sock, _ = self.listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        sock.settimeout(SEND_TIMEOUT_SECONDS)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.selector.register(sock, selectors.EVENT_READ, _Pending(sock, LineReader(sock)))

    def _greet(self, pending: _Pending) -> None:
        try:
            messages = pending.reader.read()
        except WireError:
            messages = None
        if messages == []:
            return
        self.selector.unregister(pending.sock)
        hello = messages[0] if messages else {}
        index = self._node_for(hello) if hello.get("op") == "hello" else None
        if index is None or not secrets.compare_digest(str(hello.get("token")), self.token):
            log.warning("refused a worker connection: %s", _describe(hello))
            pending.sock.close()
            return
        link = WorkerLink(index, self.remote[index], pending.sock, unsent=self.unsent)
        link.reader = pending.reader
        self.links[index] = link
        self.selector.register(pending.sock, selectors.EVENT_READ, link)
        log.info("worker on %s (pid %s) connected", link.hostname, hello.get("pid"))
        self.events.node_ready(index)
        self._dispatch(link, messages[1:] if messages else [])

    def _node_for(self, hello: Message) -> int | None:
        """The remote node a worker runs on: by node name, else by its rank in the step."""
        free = [i for i in sorted(self.remote) if i not in self.links]
        by_name = [i for i in free if self.remote[i] == hello.get("node")]
        if by_name:
            return by_name[0]
        rank = hello.get("rank")
        ordered = sorted(self.remote)
        if isinstance(rank, int) and 0 <= rank < len(ordered) and ordered[rank] in free:
            return ordered[rank]
        return None

    def _relay(self, link: WorkerLink) -> None:
        try:
            messages = link.reader.read()
        except WireError as exc:
            log.warning("bad message from the worker on %s: %s", link.hostname, exc)
            messages = None
        if messages is None:
            self.drop(link)
            return
        self._dispatch(link, messages)

    def _dispatch(self, link: WorkerLink, messages: list[Message]) -> None:
        for message in messages:
            op = message["op"]
            if op == "started":
                self.events.run_started(int(message["key"]), int(message["pid"]))
            elif op == "exited":
                self.events.run_exited(int(message["key"]), int(message["code"]))
            elif op == "failed":
                later = bool(message.get("later"))
                self.events.run_failed(int(message["key"]), str(message.get("error")), later)
            elif op == "cancelled":
                self.events.run_cancelled(int(message["key"]))

    def drop(self, link: WorkerLink) -> None:
        """Forget a worker that went away: its node leaves the pool."""
        if not link.alive and link.sock.fileno() < 0:
            return
        link.alive = False
        if link.index is not None and self.links.get(link.index) is link:
            del self.links[link.index]
        self.selector.unregister(link.sock)
        link.sock.close()
        log.warning("the worker on %s is gone", link.hostname)
        self.events.node_lost(link)

    def _step_exited(self, step: _Step) -> None:
        code = step.popen.wait()
        self.selector.unregister(step.pidfd)
        os.close(step.pidfd)
        self.step = None
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(level, "the remote workers' step exited with code %s", code)

    # ---- stopping --------------------------------------------------------------------------

    def flush(self) -> None:
        """Write every worker's queued messages."""
        unsent = list(self.unsent)
        self.unsent.clear()
        for link in unsent:
            link.flush()

    def _all_links(self) -> list[WorkerLink]:
        links = {id(link): link for link in [*self.links.values(), self.local] if link}
        return list(links.values())

    def close(self, timeout: float = 10.0) -> None:
        """Say bye to every worker, wait for them, close every socket."""
        links = {id(link): link for link in self._all_links()}
        for link in links.values():
            link.send({"op": "bye"})
            link.flush()
        for proc in [p for p in (self.local_popen, self.step.popen if self.step else None) if p]:
            try:
                proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for link in links.values():
            if link.sock.fileno() >= 0:
                self.selector.unregister(link.sock)
                link.sock.close()
        if self.step is not None:
            self.selector.unregister(self.step.pidfd)
            os.close(self.step.pidfd)
            self.step = None
        if self.listener is not None:
            self.selector.unregister(self.listener)
            self.listener.close()


def _describe(hello: Message) -> str:
    if not hello:
        return "it said nothing"
    return f"node {hello.get('node')!r}, rank {hello.get('rank')!r}"
