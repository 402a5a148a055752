"""Which nodes a job runs on, which of their CPUs and GPUs it gets, and what each node has left.

A multi-node job takes ``num_nodes`` whole idle nodes (every CPU and GPU on them). A single-node
job packs: it takes ``1 / node_packing_count`` of a node, ``ceil(ranks_per_node x
threads_per_rank / threads_per_core)`` of its CPUs and ``ranks_per_node x gpus_per_rank`` of
its GPUs, and a node takes jobs while its share, CPUs and GPUs last. Shares are exact fractions,
so four quarter-node jobs fill a node exactly. The rules are the same in both job modes; with
the default ``node_packing_count = 1`` a job has a node to itself.

CPUs and GPUs are handed out as indices ``0 .. n-1`` of the node (lowest free first, so a job's
CPUs are contiguous when they can be); whoever starts the process maps them to the node's own
CPU ids (its affinity mask) and GPU ids.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from balsam.domain.resources import NodeSpec, ResourceRequest

WHOLE = Fraction(1)


@dataclass
class NodeUsage:
    """One node and what running jobs take of it."""

    spec: NodeSpec
    share: Fraction = Fraction(0)
    free_cpus: list[int] = field(default_factory=list)
    free_gpus: list[int] = field(default_factory=list)
    #: False until the node can start jobs (its worker connected), or after it was lost.
    ready: bool = True

    def __post_init__(self) -> None:
        self.free_cpus = list(range(max(self.spec.cpus, 1)))
        self.free_gpus = list(range(self.spec.gpus))

    def fits(self, share: Fraction, cpus: int, gpus: int) -> bool:
        """True when a job taking these amounts can start here now."""
        return (
            self.ready
            and self.share + share <= WHOLE
            and cpus <= len(self.free_cpus)
            and gpus <= len(self.free_gpus)
        )

    @property
    def idle(self) -> bool:
        """Ready and nothing runs here."""
        return self.ready and self.share == 0 and len(self.free_cpus) == max(self.spec.cpus, 1)

    def take(
        self, share: Fraction, cpus: int, gpus: int
    ) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """Take a share and the lowest free CPU and GPU indices."""
        self.share += share
        self.free_cpus.sort()
        self.free_gpus.sort()
        taken_cpus, self.free_cpus = self.free_cpus[:cpus], self.free_cpus[cpus:]
        taken_gpus, self.free_gpus = self.free_gpus[:gpus], self.free_gpus[gpus:]
        return tuple(taken_cpus), tuple(taken_gpus)

    def give_back(self, share: Fraction, cpus: tuple[int, ...], gpus: tuple[int, ...]) -> None:
        """Return what :meth:`take` handed out."""
        self.share -= share
        self.free_cpus.extend(cpus)
        self.free_gpus.extend(gpus)


@dataclass(frozen=True)
class Placement:
    """Where one job runs: its nodes, and the CPU and GPU indices it has on each."""

    nodes: tuple[int, ...]
    hosts: tuple[str, ...]
    share: Fraction
    cpus: tuple[tuple[int, ...], ...]
    gpus: tuple[tuple[int, ...], ...]


class NodePool:
    """The allocation's nodes and their free capacity.

    The nodes that can take a job now (``_open``) and the idle ones (``_idle``) are kept as
    index sets, updated as jobs take and give back room, so that placing a job and asking for
    room cost the same on a thousand nodes as on one: in a full allocation only the nodes a
    run just left are looked at.
    """

    def __init__(self, nodes: list[NodeSpec]) -> None:
        self.nodes = [NodeUsage(spec) for spec in nodes]
        self._open: set[int] = set()
        self._idle: set[int] = set()
        #: Free CPUs of each open node as last counted, and their sum.
        self._counted: dict[int, int] = {}
        self._free_cpus = 0
        for i in range(len(self.nodes)):
            self._refresh(i)
        self._capacity = self._count_capacity()

    def _refresh(self, i: int) -> None:
        """Re-file node ``i`` after what it holds or its readiness changed."""
        node = self.nodes[i]
        if i in self._open:
            self._open.discard(i)
            self._free_cpus -= self._counted.pop(i)
        if node.ready and node.share < WHOLE and node.free_cpus:
            self._open.add(i)
            self._counted[i] = len(node.free_cpus)
            self._free_cpus += self._counted[i]
        if node.idle:
            self._idle.add(i)
        else:
            self._idle.discard(i)

    def _count_capacity(self) -> tuple[int, int]:
        """Ready nodes and their CPUs (asked every turn of the loop; changes with readiness)."""
        ready = [n for n in self.nodes if n.ready]
        return len(ready), sum(max(n.spec.cpus, 1) for n in ready)

    def __len__(self) -> int:
        return len(self.nodes)

    @property
    def specs(self) -> list[NodeSpec]:
        """The nodes as discovered."""
        return [n.spec for n in self.nodes]

    def place(self, req: ResourceRequest) -> Placement | None:
        """Take room for a job, or None when it cannot start now (lowest node first)."""
        if req.num_nodes > 1:
            if len(self._idle) < req.num_nodes:
                return None
            return self._take(sorted(self._idle)[: req.num_nodes], WHOLE, None, None)
        share = Fraction(1, req.node_packing_count)
        cpus, gpus = req.cpus_per_node, req.gpus_per_node
        for i in sorted(self._open):
            if self.nodes[i].fits(share, cpus, gpus):
                return self._take([i], share, cpus, gpus)
        return None

    def _take(
        self, chosen: list[int], share: Fraction, cpus: int | None, gpus: int | None
    ) -> Placement:
        """Take ``share`` of each chosen node and ``cpus``/``gpus`` of it (None: all of them)."""
        cpu_sets, gpu_sets = [], []
        for i in chosen:
            node = self.nodes[i]
            want_cpus = len(node.free_cpus) if cpus is None else cpus
            want_gpus = len(node.free_gpus) if gpus is None else gpus
            taken_cpus, taken_gpus = node.take(share, want_cpus, want_gpus)
            cpu_sets.append(taken_cpus)
            gpu_sets.append(taken_gpus)
            self._refresh(i)
        hosts = tuple(self.nodes[i].spec.hostname for i in chosen)
        return Placement(tuple(chosen), hosts, share, tuple(cpu_sets), tuple(gpu_sets))

    def release(self, placement: Placement) -> None:
        """Give back what ``placement`` took."""
        for i, cpus, gpus in zip(placement.nodes, placement.cpus, placement.gpus, strict=True):
            self.nodes[i].give_back(placement.share, cpus, gpus)
            self._refresh(i)

    def set_ready(self, index: int, ready: bool) -> None:
        """Mark a node able (or no longer able) to start jobs."""
        self.nodes[index].ready = ready
        self._refresh(index)
        self._capacity = self._count_capacity()

    @property
    def ready_count(self) -> int:
        """Nodes that can start jobs now or once their running jobs end."""
        return self._capacity[0]

    def free_slots(self, per_cpu: bool) -> int:
        """About how many more jobs could start now (what to claim).

        ``per_cpu`` counts free CPUs (serial mode's one-core jobs); otherwise idle nodes (mpi
        mode's typical whole-node jobs).
        """
        return self._free_cpus if per_cpu else len(self._idle)

    def capacity(self, per_cpu: bool) -> int:
        """About how many jobs the allocation runs at once when full (see :meth:`free_slots`)."""
        return self._capacity[1] if per_cpu else self._capacity[0]

    def has_room(self) -> bool:
        """Whether any ready node has any share left (a cheap test before placing)."""
        return bool(self._open)


def select_nodes(nodes: list[NodeSpec], limit: int | None, offset: int) -> list[NodeSpec]:
    """The ``limit`` nodes starting at ``offset`` (``--limit-nodes``/``--offset-nodes``)."""
    chosen = nodes[offset:]
    return chosen if limit is None else chosen[:limit]
