"""Node discovery inside a Flux batch job: the RFC 29 host list the Flux adapter's script
exports (``BALSAM_FLUX_HOSTLIST``, from ``flux getattr hostlist``), and when it applies.

The expansion cases include RFC 29's own test vectors (flux-framework/rfc, spec_29)."""

from __future__ import annotations

import pytest

from balsam.domain.resources import NodeSpec
from balsam.errors import ConfigError
from balsam.platform import nodes
from balsam.platform.schedulers.flux import header

URI = "local:///tmp/flux-Ab12/local-0"


def inside(hostlist: str, **more: str) -> dict[str, str]:
    """The environment of a launcher started by the Flux adapter's script."""
    return {"BALSAM_FLUX_HOSTLIST": hostlist, "BALSAM_FLUX_URI": URI, "FLUX_URI": URI} | more


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("foox,fooy,fooz", ["foox", "fooy", "fooz"]),
        ("[1-3,5-6]", ["1", "2", "3", "5", "6"]),
        ("foo[1-5]", ["foo1", "foo2", "foo3", "foo4", "foo5"]),
        ("foo[0-1]-eth2", ["foo0-eth2", "foo1-eth2"]),
        ("foo1,foo1,foo1", ["foo1", "foo1", "foo1"]),
        ("[00-02]", ["00", "01", "02"]),
        ("[00-2]", ["00", "01", "02"]),
        ("foo[1,1,2,1]", ["foo1", "foo1", "foo2", "foo1"]),
        # The first id's zero padding applies to the whole idlist.
        ("n[005,4,11-13]", ["n005", "n004", "n011", "n012", "n013"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("tioga[18-19],login3", ["tioga18", "tioga19", "login3"]),
    ],
)
def test_flux_hostlist_expands_as_rfc_29_says(text: str, expected: list[str]) -> None:
    assert nodes.parse_flux_hostlist(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty Flux host list"),
        ("a,,b", "empty entry"),
        ("n[1-2", "unbalanced '\\['"),
        ("n1-2]", "unbalanced '\\]'"),
        ("n[1-[2]]", "nested"),
        ("r[1-2]n[1-2]", "more than one"),
        ("n[a-b]", "bad range"),
        ("n[5-3]", "reversed range"),
        ("my host", "whitespace"),
    ],
)
def test_malformed_flux_hostlist_is_a_config_error(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        nodes.parse_flux_hostlist(text)


def test_the_flux_source_gives_each_host_once_in_order() -> None:
    assert nodes.flux_hosts(inside("node[3-4],node1")) == ["node3", "node4", "node1"]
    # Several brokers on one host (a test instance) still make one node.
    assert nodes.flux_hosts(inside("node7,node7,node8")) == ["node7", "node8"]


def test_the_flux_source_needs_the_list_and_the_instance_it_was_taken_in() -> None:
    assert nodes.flux_hosts({}) is None
    assert nodes.flux_hosts({"FLUX_URI": URI}) is None
    assert nodes.flux_hosts(inside("")) is None
    # A job submitted from inside the allocation inherits the variables: not its hosts.
    assert nodes.flux_hosts(inside("node[1-2]", FLUX_URI="local:///tmp/other/local-0")) is None
    without_uri = inside("node[1-2]")
    del without_uri["FLUX_URI"]
    assert nodes.flux_hosts(without_uri) is None
    unstamped = inside("node[1-2]")
    del unstamped["BALSAM_FLUX_URI"]
    assert nodes.flux_hosts(unstamped) is None


def test_a_malformed_flux_list_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"^BALSAM_FLUX_HOSTLIST: reversed range"):
        nodes.flux_hosts(inside("node[9-2]"))


def test_flux_comes_before_the_allocation_it_runs_inside() -> None:
    # Flux started in a Slurm or PBS job: the outer variables name the whole allocation.
    env = inside("node[2-3]", SLURM_JOB_NODELIST="node[1-8]", PBS_NODEFILE="/nonexistent")
    assert nodes.allocation_hosts(env) == ("flux", ["node2", "node3"])
    stale = env | {"FLUX_URI": "local:///elsewhere"}
    assert nodes.allocation_hosts(stale) == ("slurm", [f"node{i}" for i in range(1, 9)])


def test_discover_nodes_inside_flux(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_cpu_count", lambda: 48)
    monkeypatch.setattr(nodes, "local_gpu_count", lambda: 4)
    assert nodes.discover_nodes(environ=inside("gpu[01-02]")) == [
        NodeSpec("gpu01", 48, 4),
        NodeSpec("gpu02", 48, 4),
    ]


def test_the_flux_script_exports_what_the_source_reads() -> None:
    lines = header()
    assert "BALSAM_FLUX_HOSTLIST=$(flux getattr hostlist) || exit 1" in lines
    assert 'export BALSAM_FLUX_HOSTLIST BALSAM_FLUX_URI="$FLUX_URI"' in lines
    assert nodes.FLUX_HOSTLIST_VARIABLE == "BALSAM_FLUX_HOSTLIST"
    assert nodes.FLUX_URI_VARIABLE == "BALSAM_FLUX_URI"
