"""The launcher's side of serial mode across nodes: starting the workers and talking to them.

The launcher listens on a TCP port of its host, then starts one worker per remote node in a
single step of the MPI launcher (``srun``, ``mpiexec -ppn 1``, ``aprun -N 1``, ...), each with
the address and a random token in its environment. A worker connects, says ``hello`` with the
token and its node's name (or its rank in the step), and from then on its node takes jobs. A
connection without the right token is closed. A worker that goes away takes its node out of
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

from balsam.launcher.wire import LineReader, Message, WireError, send
from balsam.platform.mpi import MpiLauncher, MpiRun

log = logging.getLogger(__name__)

SEND_TIMEOUT_SECONDS = 30.0


class FleetEvents(Protocol):
    """What the launcher does when workers report."""

    def node_ready(self, index: int) -> None:
        """Node ``index`` has a worker and may take jobs."""
        ...

    def node_lost(self, index: int, link: WorkerLink) -> None:
        """The worker of node ``index`` went away; its running children are lost."""
        ...

    def remote_exit(self, key: int, code: int) -> None:
        """A remote child exited with ``code``."""
        ...

    def remote_failed(self, key: int, error: str) -> None:
        """A remote child could not be started."""
        ...


@dataclass(eq=False)
class WorkerLink:
    """A connected worker: its node and its socket."""

    index: int
    hostname: str
    sock: socket.socket
    reader: LineReader = field(init=False)
    alive: bool = True

    def __post_init__(self) -> None:
        self.reader = LineReader(self.sock)

    def send(self, message: Message) -> None:
        """Send one message; a worker that cannot take it counts as gone."""
        if not self.alive:
            return
        try:
            send(self.sock, message)
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
        cpus: tuple[int, ...],
    ) -> None:
        """Ask the worker to start ``argv`` (its environment plus ``env``)."""
        message = {"op": "run", "key": key, "argv": argv, "cwd": str(cwd), "env": dict(env)}
        self.send({**message, "out": str(out), "cpus": list(cpus)})

    def send_signal(self, key: int, sig: int) -> None:
        """Signal the process group of the child under ``key``."""
        self.send({"op": "signal", "key": key, "sig": sig})


@dataclass(eq=False)
class _Pending:
    """A connection that has not said hello yet."""

    sock: socket.socket
    reader: LineReader


@dataclass(eq=False)
class _Step:
    """The MPI-launcher process that runs every worker."""

    popen: subprocess.Popen[bytes]
    pidfd: int


class WorkerFleet:
    """Listens for workers, starts them on the remote nodes, and relays their messages."""

    def __init__(
        self,
        selector: selectors.BaseSelector,
        remote: dict[int, str],
        events: FleetEvents,
        address: str,
    ) -> None:
        self.selector = selector
        self.remote = dict(remote)
        self.events = events
        self.token = secrets.token_hex(16)
        self.listener = socket.create_server((address, 0), backlog=max(len(remote), 8))
        self.listener.setblocking(False)
        self.selector.register(self.listener, selectors.EVENT_READ, self)
        self.links: dict[int, WorkerLink] = {}
        self.step: _Step | None = None

    @property
    def address(self) -> str:
        """``host:port`` the workers connect to."""
        host, port = self.listener.getsockname()[:2]
        return f"{host}:{port}"

    def worker_env(self, base: Mapping[str, str]) -> dict[str, str]:
        """The environment the worker step runs with."""
        return {**base, "BALSAM_WORKER_ADDRESS": self.address, "BALSAM_WORKER_TOKEN": self.token}

    def start(
        self, mpi: MpiLauncher, cpus_per_node: int, env: Mapping[str, str], log_path: Path
    ) -> subprocess.Popen[bytes]:
        """Start one worker on each remote node in one step of ``mpi``."""
        hosts = [self.remote[i] for i in sorted(self.remote)]
        run = MpiRun(
            argv=[sys.executable, "-m", "balsam.launcher.worker"],
            hosts=hosts,
            ranks_per_node=1,
            # The worker's step must own every CPU of its node: its jobs run inside it.
            threads_per_rank=max(cpus_per_node, 1),
            env={},
        )
        argv = mpi.command(run)
        log.info("starting workers on %s: %s", ",".join(hosts), " ".join(argv))
        with log_path.open("ab") as out:
            popen = subprocess.Popen(
                argv,
                env=self.worker_env(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                close_fds=True,
            )
        pidfd = os.pidfd_open(popen.pid)
        self.step = _Step(popen, pidfd)
        self.selector.register(pidfd, selectors.EVENT_READ, self.step)
        return popen

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
        link = WorkerLink(index, self.remote[index], pending.sock)
        link.reader = pending.reader
        self.links[index] = link
        self.selector.register(pending.sock, selectors.EVENT_READ, link)
        log.info("worker on %s (pid %s) connected", link.hostname, hello.get("pid"))
        self.events.node_ready(index)

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
        for message in messages:
            if message["op"] == "exited":
                self.events.remote_exit(int(message["key"]), int(message["code"]))
            elif message["op"] == "failed":
                self.events.remote_failed(int(message["key"]), str(message.get("error")))

    def drop(self, link: WorkerLink) -> None:
        """Forget a worker that went away (or must go): its node leaves the pool."""
        if self.links.get(link.index) is not link:
            return
        del self.links[link.index]
        link.alive = False
        self.selector.unregister(link.sock)
        link.sock.close()
        log.warning("worker on %s is gone: its node takes no more jobs", link.hostname)
        self.events.node_lost(link.index, link)

    def _step_exited(self, step: _Step) -> None:
        code = step.popen.wait()
        self.selector.unregister(step.pidfd)
        os.close(step.pidfd)
        self.step = None
        level = logging.INFO if code == 0 else logging.WARNING
        log.log(level, "the worker step exited with code %s", code)

    def close(self, timeout: float = 10.0) -> None:
        """Say bye to every worker, wait for the step, close the listener."""
        for link in list(self.links.values()):
            link.send({"op": "bye"})
        if self.step is not None:
            try:
                self.step.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.step.popen.kill()
                self.step.popen.wait()
        for link in list(self.links.values()):
            link.sock.close()
        self.listener.close()


def _describe(hello: Message) -> str:
    if not hello:
        return "it said nothing"
    return f"node {hello.get('node')!r}, rank {hello.get('rank')!r}"
