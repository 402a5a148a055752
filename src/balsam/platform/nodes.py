"""Which compute nodes a launcher may use, and how big they are.

A launcher asks :func:`discover_nodes` once at start-up. Each entry of :data:`NODE_SOURCES`
looks at the environment for the host list of a batch allocation (Slurm, PBS, ... are added
there as the batch-scheduler adapters land); when none applies, the launcher runs on the local
host as one node. Sizes come from the site's platform settings, with the local machine's own
counts as the default (``0`` in the settings means "detect").
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Mapping

from balsam.domain.resources import NodeSpec

#: A function that returns the allocation's hostnames from the environment, or None when the
#: launcher does not run inside that kind of allocation.
NodeSource = Callable[[Mapping[str, str]], list[str] | None]

#: Allocation kinds tried in order before falling back to the local host.
NODE_SOURCES: dict[str, NodeSource] = {}


def local_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which batch systems narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux hosts
        return os.cpu_count() or 1


def local_hostname() -> str:
    """This host's name as MPI launchers and logs know it."""
    return socket.gethostname()


def allocation_hosts(environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """The kind of allocation and its hostnames; ``("local", [this host])`` outside one."""
    env = os.environ if environ is None else environ
    for kind, source in NODE_SOURCES.items():
        hosts = source(env)
        if hosts:
            return kind, hosts
    return "local", [local_hostname()]


def discover_nodes(
    cpus_per_node: int = 0,
    gpus_per_node: int = 0,
    environ: Mapping[str, str] | None = None,
) -> list[NodeSpec]:
    """The nodes this launcher may use: each with ``cpus_per_node`` CPUs (0 = this host's)."""
    _, hosts = allocation_hosts(environ)
    cpus = cpus_per_node if cpus_per_node > 0 else local_cpu_count()
    return [NodeSpec(hostname=host, cpus=cpus, gpus=gpus_per_node) for host in hosts]
