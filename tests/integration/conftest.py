"""Fixtures of real transfer servers (tests/transferkit.py, tests/globus_standin.py)."""

from __future__ import annotations

from globus_standin import globus_standin
from transferkit import file_server, rsync_daemon, sshd

__all__ = ["file_server", "globus_standin", "rsync_daemon", "sshd"]
