"""The worker: the small process that starts a launcher's commands on one node.

A launcher never forks its jobs itself. It starts one worker beside it, connected through a
socket pair, which starts every command on the launcher's host (jobs on that node, MPI
launches such as mpiexec or srun, preprocess and postprocess steps); in serial mode it also
starts one worker on each other node of the allocation, through srun or the MPI launcher
(``-ppn 1``), connected over TCP. Each is fed over its connection (:mod:`balsam.launcher.wire`):
it starts what it is told to in a session of its own, bound to the CPUs it is given, and
reports each start (with the pid) and each exit. It holds nothing but its running children and
knows nothing of the database.

Why a separate process: a fork costs in proportion to the forking process's memory on some
kernels (gVisor, for one), and the launcher, holding the database drivers, is several times
bigger than a worker; the launcher's bookkeeping and the worker's spawning also run on two
cores at once.

When the connection ends (the launcher exited or died, even by SIGKILL) the worker kills every
child it started and exits, so no job runs on unaccounted. Run as ``python -m
balsam.launcher.worker`` with ``BALSAM_WORKER_FD`` (an inherited socket) or
``BALSAM_WORKER_ADDRESS=host:port`` and ``BALSAM_WORKER_TOKEN`` in the environment.
"""

from __future__ import annotations

import errno
import logging
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.wire import LineReader, Message, WireError, encode, send
from balsam.platform.nodes import local_node_name

log = logging.getLogger("balsam.launcher.worker")

#: Variables that carry a process's rank under the launchers Balsam starts workers with.
RANK_VARIABLES = ("SLURM_PROCID", "PMI_RANK", "PMIX_RANK", "OMPI_COMM_WORLD_RANK", "ALPS_APP_PE")
SEND_TIMEOUT_SECONDS = 30.0


def worker_rank(env: dict[str, str]) -> int:
    """This worker's rank in the step that started it (-1 when none is known)."""
    for name in RANK_VARIABLES:
        if env.get(name, "").isdigit():
            return int(env[name])
    return -1


class Worker:
    """Runs the launcher's commands on this node."""

    def __init__(self, sock: socket.socket, env: dict[str, str]) -> None:
        self.sock = sock
        self.env = env
        self.selector = selectors.DefaultSelector()
        self.children = ChildProcesses(self.selector)
        self.cpu_ids = sorted(os.sched_getaffinity(0))
        self.reader = LineReader(sock)
        #: Running commands by the launcher's key.
        self.running: dict[int, Child] = {}
        #: Prefetched run messages by the key of the command each follows, and the reverse.
        self.queued: dict[int, Message] = {}
        self.following: dict[int, int] = {}
        #: Replies of the current round, written together.
        self.replies: list[bytes] = []

    def hello(self, token: str) -> None:
        """Introduce this node to the launcher."""
        message = {
            "op": "hello",
            "token": token,
            "node": local_node_name(self.env),
            "rank": worker_rank(self.env),
            "cpus": len(self.cpu_ids),
            "pid": os.getpid(),
        }
        send(self.sock, message)

    def serve(self) -> int:
        """Run until the launcher says ``bye`` or goes away; then kill what still runs."""
        self.selector.register(self.sock, selectors.EVENT_READ, None)
        try:
            while True:
                for key, _ in self.selector.select():
                    if key.data is None:
                        if not self._on_messages():
                            return 0
                    else:
                        self._on_exit(key.data)
                # One write for everything this round produced, not one per message.
                self._send_replies()
        finally:
            self._kill_all()

    def _on_messages(self) -> bool:
        try:
            messages = self.reader.read()
        except WireError as exc:
            log.error("bad message from the launcher: %s", exc)
            return False
        if messages is None:
            return False
        for message in messages:
            if message["op"] == "bye":
                return False
            self._handle(message)
        return True

    def _handle(self, message: Message) -> None:
        if message["op"] == "run":
            after = message.get("after")
            if isinstance(after, int) and (after in self.running or after in self.following):
                # Prefetched: starts the moment the command it follows exits, in its place
                # (behind a queued one, once that one has run).
                self.queued[after] = message
                self.following[int(message["key"])] = after
            else:
                self._run(message)
        elif message["op"] == "signal":
            self._signal(int(message["key"]), signal.Signals(int(message["sig"])))

    def _signal(self, key: int, sig: signal.Signals) -> None:
        """Signal a running command; a queued one is taken off the queue instead."""
        if key in self.following:
            before = self.following.pop(key)
            del self.queued[before]
            behind = self.queued.pop(key, None)
            if behind is not None:
                # What queued behind it moves up a place.
                self.queued[before] = behind
                self.following[int(behind["key"])] = before
            self._reply({"op": "cancelled", "key": key})
        elif key in self.running:
            self.children.signal(self.running[key], sig)

    def _run(self, message: Message) -> None:
        key = str(message["key"])
        cpus = [self.cpu_ids[i % len(self.cpu_ids)] for i in message.get("cpus", [])]
        env = {**self.env, **message.get("env", {})}
        try:
            if message.get("makedirs"):
                os.makedirs(message["cwd"], exist_ok=True)
            if message.get("files"):  # only a function job's run is given files
                write_files(Path(message["cwd"]), message["files"])
            child = self.children.spawn(
                key,
                Step.RUN,
                list(message["argv"]),
                Path(message["cwd"]),
                env,
                Path(message["out"]),
                cpus,
                str(message.get("header", "")),
            )
        except (OSError, ValueError, TypeError) as exc:
            # One job's bad command (a missing program, a NUL byte in an argument or in its
            # environment, a directory it cannot have) fails that job, never this worker.
            reply = {"op": "failed", "key": message["key"], "error": str(exc)}
            if getattr(exc, "errno", None) in NODE_FULL:
                # Not the job's fault: the node's disk (or quota) is full for now.
                reply["later"] = True
            self._reply(reply)
            # What was queued behind it starts now, in its place, as after an exit.
            self._start_next(int(message["key"]))
            return
        self.running[int(message["key"])] = child
        self._reply({"op": "started", "key": message["key"], "pid": child.pid})

    def _on_exit(self, child: Child) -> None:
        code = self.children.reap(child)
        key = int(child.job_id)
        del self.running[key]
        self._reply({"op": "exited", "key": key, "code": code})
        self._start_next(key)

    def _start_next(self, key: int) -> None:
        """Start the command queued behind the one of ``key``, which has ended."""
        successor = self.queued.pop(key, None)
        if successor is not None:
            del self.following[int(successor["key"])]
            self._run(successor)

    def _reply(self, message: dict[str, Any]) -> None:
        self.replies.append(encode(message))

    def _send_replies(self) -> None:
        if not self.replies:
            return
        data, self.replies = b"".join(self.replies), []
        try:
            self.sock.sendall(data)
        except OSError as exc:
            log.error("cannot reach the launcher: %s", exc)

    def _kill_all(self) -> None:
        for child in self.children:
            self.children.signal(child, signal.SIGKILL)
            self.children.reap(child)


#: Start failures that say the node cannot write now, not that the job is wrong.
NODE_FULL = frozenset({errno.ENOSPC, errno.EDQUOT})


def write_files(cwd: Path, files: dict[str, str]) -> None:
    """Write the text files a run is given (a function job's call) in its directory, each
    whole or not at all (OSError, ValueError for a name that is not a plain file name)."""
    for name, text in files.items():
        if not name or "/" in name or name in (".", ".."):
            raise ValueError(f"not a file name: {name!r}")
        partial = cwd / f".{name}.{os.getpid()}.part"
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, cwd / name)


def _note_signal(signum: int, _frame: object) -> None:
    log.info("ignoring %s: the launcher decides when jobs stop", signal.Signals(signum).name)


def connect(address: str) -> socket.socket:
    """Connect to the launcher at ``host:port``."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=SEND_TIMEOUT_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main() -> int:
    """Entry point of ``python -m balsam.launcher.worker``."""
    logging.basicConfig(level=logging.WARNING, format="worker %(process)d: %(message)s")
    # Stopping is the launcher's call (it times jobs out gracefully); the worker outlives
    # terminal and batch-system signals until told to stop or cut off. A handler, not
    # SIG_IGN: ignored signals would stay ignored in the jobs it execs, caught ones do not.
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _note_signal)
    env = dict(os.environ)
    fd = env.pop("BALSAM_WORKER_FD", "")
    address, token = env.pop("BALSAM_WORKER_ADDRESS", ""), env.pop("BALSAM_WORKER_TOKEN", "")
    if fd.isdigit():
        sock = socket.socket(fileno=int(fd))
        # Passed to this process inheritable; the jobs it starts must not hold it (they could
        # write into the launcher's channel, or keep it open after this worker is gone).
        os.set_inheritable(sock.fileno(), False)
        sock.settimeout(SEND_TIMEOUT_SECONDS)
        address = "the launcher's socket"
    elif address and token:
        try:
            sock = connect(address)
        except OSError as exc:
            log.error("cannot connect to the launcher at %s: %s", address, exc)
            return 1
    else:
        log.error("set BALSAM_WORKER_FD, or BALSAM_WORKER_ADDRESS and BALSAM_WORKER_TOKEN")
        return 2
    worker = Worker(sock, env)
    try:
        worker.hello(token)
    except OSError as exc:
        log.error("cannot reach the launcher at %s: %s", address, exc)
        return 1
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())
