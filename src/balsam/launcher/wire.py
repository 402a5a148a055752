"""The launcher-worker wire format: one JSON object per line over a socket.

Launcher to worker: ``run`` (key, argv, cwd, env additions, output path, CPU indices, and
optionally ``after``: the key of a running command it is to follow, starting the moment that
one exits, ``makedirs``: make cwd first, and ``files``: text files to write in cwd just
before the start, such as a function job's call), ``signal`` (key, signal number; a queued run
is cancelled instead), ``bye``.

Worker to launcher: ``hello`` (token, node name, rank, CPU count, pid) once, then for each run
``started`` (key, pid) and ``exited`` (key, exit code), or ``failed`` (key, why it could not
start), or ``cancelled`` (key) for a queued run taken off the queue. Keys are the launcher's.
"""

from __future__ import annotations

import json
import socket
from typing import Any

#: A message on the wire.
Message = dict[str, Any]
#: Longest line accepted (a run message carries a job's argv and environment additions).
MAX_LINE = 16 * 1024 * 1024


class WireError(Exception):
    """The peer sent something that is not a message, or a line too long."""


def encode(message: Message) -> bytes:
    """One message as a line."""
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


class LineReader:
    """Splits what a non-blocking socket delivers into messages."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.pending = b""

    def read(self) -> list[Message] | None:
        """Messages that arrived; None when the peer closed the connection."""
        try:
            chunk = self.sock.recv(1 << 20)
        except (BlockingIOError, InterruptedError):
            return []
        except OSError:
            return None
        if not chunk:
            return None
        *lines, self.pending = (self.pending + chunk).split(b"\n")
        if len(self.pending) > MAX_LINE:
            raise WireError("message too long")
        return [decode(line) for line in lines if line.strip()]


def decode(line: bytes) -> Message:
    """One line as a message (WireError if it is not a JSON object with an ``op``)."""
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise WireError(f"not JSON: {line[:80]!r}") from exc
    if not isinstance(message, dict) or not isinstance(message.get("op"), str):
        raise WireError(f"not a message: {line[:80]!r}")
    return message


def send(sock: socket.socket, message: Message) -> None:
    """Write one message (blocking; the socket's timeout bounds a stuck peer)."""
    sock.sendall(encode(message))
