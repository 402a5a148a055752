"""Resource arithmetic."""

from __future__ import annotations

from balsam.domain.resources import NodeSpec, ResourceRequest, resource_problems, why_cannot_fit


def test_cpus_and_gpus_per_node() -> None:
    req = ResourceRequest(
        num_nodes=2, ranks_per_node=4, threads_per_rank=2, threads_per_core=2, gpus_per_rank=1
    )
    assert req.total_ranks == 8
    assert req.cpus_per_node == 4
    assert req.gpus_per_node == 4


def test_problems_name_the_field() -> None:
    problems = resource_problems(ResourceRequest(num_nodes=-1, ranks_per_node=0))
    assert "num_nodes must be at least 1 (got -1)" in problems
    assert "ranks_per_node must be at least 1 (got 0)" in problems
    assert resource_problems(ResourceRequest()) == []


def test_why_cannot_fit() -> None:
    nodes = [NodeSpec("n1", cpus=4), NodeSpec("n2", cpus=4)]
    assert why_cannot_fit(ResourceRequest(num_nodes=3), nodes) == (
        "needs 3 nodes but the allocation has 2"
    )
    assert "cores per node" in str(why_cannot_fit(ResourceRequest(ranks_per_node=8), nodes))
    assert "GPUs" in str(why_cannot_fit(ResourceRequest(gpus_per_rank=1), nodes))
    assert why_cannot_fit(ResourceRequest(num_nodes=2, ranks_per_node=4), nodes) is None
