"""Which nodes a job runs on, and what each node has left.

Serial mode packs single-node jobs: a job takes ``1 / node_packing_count`` of a node and
``ranks_per_node * threads_per_rank / threads_per_core`` of its cores (and its GPUs), and a node
takes jobs while both its share and its cores last. MPI mode gives each job ``num_nodes``
whole idle nodes. Shares are exact fractions, so four quarter-node jobs fill a node exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from balsam.domain.resources import NodeSpec, ResourceRequest

WHOLE = Fraction(1)


@dataclass
class NodeUsage:
    """One node and what running jobs take of it."""

    spec: NodeSpec
    share: Fraction = Fraction(0)
    cpus: int = 0
    gpus: int = 0

    def fits(self, share: Fraction, cpus: int, gpus: int) -> bool:
        """True when a job taking these amounts can start here now."""
        return (
            self.share + share <= WHOLE
            and self.cpus + cpus <= max(self.spec.cpus, 1)
            and self.gpus + gpus <= self.spec.gpus
        )

    @property
    def idle(self) -> bool:
        """Nothing runs here."""
        return self.share == 0 and self.cpus == 0 and self.gpus == 0


@dataclass(frozen=True)
class Placement:
    """Where one job runs and what it takes on each of its nodes."""

    nodes: tuple[int, ...]
    hosts: tuple[str, ...]
    share: Fraction
    cpus: int
    gpus: int


class NodePool:
    """The allocation's nodes and their free capacity."""

    def __init__(self, nodes: list[NodeSpec]) -> None:
        self.nodes = [NodeUsage(spec) for spec in nodes]

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def specs(self) -> list[NodeSpec]:
        """The nodes as discovered."""
        return [n.spec for n in self.nodes]

    def place(self, req: ResourceRequest, whole_nodes: bool) -> Placement | None:
        """Take room for a job, or None when it cannot start now."""
        if whole_nodes:
            chosen = [i for i, n in enumerate(self.nodes) if n.idle][: req.num_nodes]
            if len(chosen) < req.num_nodes:
                return None
            spec = self.nodes[chosen[0]].spec
            return self._take(chosen, WHOLE, spec.cpus, spec.gpus)
        share = Fraction(1, req.node_packing_count)
        for i, node in enumerate(self.nodes):
            if node.fits(share, req.cpus_per_node, req.gpus_per_node):
                return self._take([i], share, req.cpus_per_node, req.gpus_per_node)
        return None

    def _take(self, chosen: list[int], share: Fraction, cpus: int, gpus: int) -> Placement:
        for i in chosen:
            node = self.nodes[i]
            node.share += share
            node.cpus += min(cpus, node.spec.cpus)
            node.gpus += min(gpus, node.spec.gpus)
        hosts = tuple(self.nodes[i].spec.hostname for i in chosen)
        return Placement(tuple(chosen), hosts, share, cpus, gpus)

    def release(self, placement: Placement) -> None:
        """Give back what ``placement`` took."""
        for i in placement.nodes:
            node = self.nodes[i]
            node.share -= placement.share
            node.cpus -= min(placement.cpus, node.spec.cpus)
            node.gpus -= min(placement.gpus, node.spec.gpus)

    def free_slots(self, whole_nodes: bool) -> int:
        """About how many more jobs could start now (what to claim)."""
        if whole_nodes:
            return sum(1 for n in self.nodes if n.idle)
        return sum(max(n.spec.cpus - n.cpus, 0) for n in self.nodes if n.share < WHOLE)

    def capacity(self, whole_nodes: bool) -> int:
        """About how many jobs the allocation runs at once when full."""
        if whole_nodes:
            return len(self.nodes)
        return sum(max(n.spec.cpus, 1) for n in self.nodes)
