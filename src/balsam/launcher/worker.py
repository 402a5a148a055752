"""The serial-mode worker: one per remote node, starting the launcher's jobs on that node.

In serial mode the launcher runs single-node jobs on every node of the allocation. It starts
this worker once on each node other than its own, through srun or the MPI launcher (``-ppn
1``), and keeps each fed over a TCP connection (:mod:`balsam.launcher.wire`): the worker starts
what it is told to in a session of its own, bound to the CPUs it is given, and reports each
exit. It holds no state of its own beyond its running children, and nothing about the
database.

When the connection ends (the launcher exited or died) the worker kills every child it started
and exits, so no job runs on unaccounted. Run as ``python -m balsam.launcher.worker`` with
``BALSAM_WORKER_ADDRESS=host:port`` and ``BALSAM_WORKER_TOKEN`` in the environment.
"""

from __future__ import annotations

import logging
import os
import selectors
import signal
import socket
import sys
from pathlib import Path
from typing import Any

from balsam.launcher.children import Child, ChildProcesses, Step
from balsam.launcher.wire import LineReader, Message, WireError, send
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
            self._run(message)
        elif message["op"] == "signal":
            for child in self.children:
                if child.job_id == str(message["key"]):
                    self.children.signal(child, signal.Signals(int(message["sig"])))

    def _run(self, message: Message) -> None:
        key = str(message["key"])
        cpus = [self.cpu_ids[i % len(self.cpu_ids)] for i in message.get("cpus", [])]
        env = {**self.env, **message.get("env", {})}
        try:
            self.children.spawn(
                key,
                Step.RUN,
                list(message["argv"]),
                Path(message["cwd"]),
                env,
                Path(message["out"]),
                cpus,
            )
        except OSError as exc:
            self._reply({"op": "failed", "key": message["key"], "error": str(exc)})

    def _on_exit(self, child: Child) -> None:
        code = self.children.reap(child)
        self._reply({"op": "exited", "key": int(child.job_id), "code": code})

    def _reply(self, message: dict[str, Any]) -> None:
        try:
            send(self.sock, message)
        except OSError as exc:
            log.error("cannot reach the launcher: %s", exc)

    def _kill_all(self) -> None:
        for child in self.children:
            self.children.signal(child, signal.SIGKILL)
            self.children.reap(child)


def connect(address: str) -> socket.socket:
    """Connect to the launcher at ``host:port``."""
    host, _, port = address.rpartition(":")
    sock = socket.create_connection((host, int(port)), timeout=SEND_TIMEOUT_SECONDS)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock


def main() -> int:
    """Entry point of ``python -m balsam.launcher.worker``."""
    logging.basicConfig(level=logging.WARNING, format="worker %(process)d: %(message)s")
    env = dict(os.environ)
    address, token = env.pop("BALSAM_WORKER_ADDRESS", ""), env.pop("BALSAM_WORKER_TOKEN", "")
    if not address or not token:
        log.error("BALSAM_WORKER_ADDRESS and BALSAM_WORKER_TOKEN must be set")
        return 2
    try:
        sock = connect(address)
    except OSError as exc:
        log.error("cannot connect to the launcher at %s: %s", address, exc)
        return 1
    worker = Worker(sock, env)
    try:
        worker.hello(token)
    except OSError as exc:
        log.error("cannot reach the launcher at %s: %s", address, exc)
        return 1
    return worker.serve()


if __name__ == "__main__":
    sys.exit(main())
