"""Resource arithmetic: what a job asks for and whether it can fit a node."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceRequest:
    """The resources one job asks for (Balsam's job fields)."""

    num_nodes: int = 1
    ranks_per_node: int = 1
    threads_per_rank: int = 1
    threads_per_core: int = 1
    gpus_per_rank: int = 0
    node_packing_count: int = 1

    @property
    def total_ranks(self) -> int:
        """Number of MPI ranks over all nodes."""
        return self.num_nodes * self.ranks_per_node

    @property
    def cpus_per_node(self) -> int:
        """Cores the job takes on each node (hardware threads shared per core)."""
        return math.ceil(self.ranks_per_node * self.threads_per_rank / self.threads_per_core)

    @property
    def gpus_per_node(self) -> int:
        """GPUs the job takes on each node."""
        return self.ranks_per_node * self.gpus_per_rank

    @property
    def node_occupancy(self) -> float:
        """Fraction of a node that a packed single-node job takes (1 / node_packing_count)."""
        return 1.0 / self.node_packing_count


def resource_problems(req: ResourceRequest) -> list[str]:
    """Human-readable reasons why ``req`` can never be valid, empty when it is fine."""
    problems = []
    for field in ("num_nodes", "ranks_per_node", "threads_per_rank", "threads_per_core"):
        if getattr(req, field) < 1:
            problems.append(f"{field} must be at least 1 (got {getattr(req, field)})")
    if req.gpus_per_rank < 0:
        problems.append(f"gpus_per_rank must not be negative (got {req.gpus_per_rank})")
    if req.node_packing_count < 1:
        problems.append(f"node_packing_count must be at least 1 (got {req.node_packing_count})")
    return problems


@dataclass(frozen=True)
class NodeSpec:
    """One compute node as the launcher sees it."""

    hostname: str
    cpus: int
    gpus: int = 0


def fits_node(req: ResourceRequest, node: NodeSpec) -> bool:
    """True when one node of this kind can hold the job's per-node share."""
    return req.cpus_per_node <= max(node.cpus, 1) and req.gpus_per_node <= node.gpus


def why_cannot_fit(req: ResourceRequest, nodes: list[NodeSpec]) -> str | None:
    """Why a job can never run on ``nodes``, or None when it can."""
    if req.num_nodes > len(nodes):
        return f"needs {req.num_nodes} nodes but the allocation has {len(nodes)}"
    biggest_cpus = max((n.cpus for n in nodes), default=0)
    biggest_gpus = max((n.gpus for n in nodes), default=0)
    if req.cpus_per_node > biggest_cpus:
        return f"needs {req.cpus_per_node} cores per node but nodes have {biggest_cpus}"
    if req.gpus_per_node > biggest_gpus:
        return f"needs {req.gpus_per_node} GPUs per node but nodes have {biggest_gpus}"
    return None
