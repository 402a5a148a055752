"""Node discovery from batch-allocation environments: Slurm, PBS, Cobalt, LSF, the local host."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from balsam.domain.resources import NodeSpec
from balsam.errors import ConfigError
from balsam.platform import nodes

# --- Slurm host lists --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("n1", ["n1"]),
        ("n[1-3,7]", ["n1", "n2", "n3", "n7"]),
        ("nid[0098-0101]", ["nid0098", "nid0099", "nid0100", "nid0101"]),
        ("n[08-10]", ["n08", "n09", "n10"]),
        ("n[8-10]", ["n8", "n9", "n10"]),
        ("a[1-2],b3,c[01-02]", ["a1", "a2", "b3", "c01", "c02"]),
        ("r[1-2]n[1-2]", ["r1n1", "r1n2", "r2n1", "r2n2"]),
        ("r[1-2]n[1-2]-ib", ["r1n1-ib", "r1n2-ib", "r2n1-ib", "r2n2-ib"]),
        ("  n[1-2] , login.example.org\n", ["n1", "n2", "login.example.org"]),
        ("n[3]", ["n3"]),
        ("n[1-2, 5]", ["n1", "n2", "n5"]),
        ("x3005c0s[13,7]b0n0", ["x3005c0s13b0n0", "x3005c0s7b0n0"]),
    ],
)
def test_slurm_nodelist_expands_in_order(text: str, expected: list[str]) -> None:
    assert nodes.parse_slurm_nodelist(text) == expected


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("n[1-3", "unbalanced"),
        ("n1-3]", "unbalanced"),
        ("n[1-[2]]", "nested"),
        ("n[5-3]", "reversed"),
        ("n[]", "bad range"),
        ("n[a-b]", "bad range"),
        ("n[1-]", "bad range"),
        ("a,,b", "empty entry"),
        ("a,", "empty entry"),
        ("a b", "whitespace"),
    ],
)
def test_malformed_slurm_nodelist_is_a_config_error(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason) as caught:
        nodes.parse_slurm_nodelist(text)
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4", [4]),
        ("72(x2),36", [72, 72, 36]),
        ("36,72(x3)", [36, 72, 72, 72]),
        (" 8(x2) , 4 ", [8, 8, 4]),
    ],
)
def test_slurm_cpus_per_node(text: str, expected: list[int]) -> None:
    assert nodes.parse_slurm_cpus_per_node(text) == expected


@pytest.mark.parametrize("text", ["", "72(2)", "x", "72(x2", "4,,4"])
def test_malformed_slurm_cpus_per_node_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="bad Slurm CPU counts"):
        nodes.parse_slurm_cpus_per_node(text)


def test_slurm_source_prefers_job_nodelist() -> None:
    env = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_NODELIST": "old1"}
    assert nodes.slurm_hosts(env) == ["n1", "n2"]
    assert nodes.slurm_hosts({"SLURM_NODELIST": "old[1-2]"}) == ["old1", "old2"]
    assert nodes.slurm_hosts({}) is None
    assert nodes.slurm_hosts({"SLURM_JOB_NODELIST": ""}) is None


def test_slurm_source_error_names_the_variable() -> None:
    with pytest.raises(ConfigError, match=r"SLURM_JOB_NODELIST: .*'n\[5-3\]'"):
        nodes.slurm_hosts({"SLURM_JOB_NODELIST": "n[5-3]"})


# --- PBS and Cobalt ----------------------------------------------------------------------


def _node_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "nodefile"
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_pbs_nodefile_gives_unique_hosts_in_first_seen_order(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "x1.hsn", "x1.hsn", "x0.hsn", "", "x1.hsn", " x2.hsn ", "x0.hsn")
    assert nodes.pbs_hosts({"PBS_NODEFILE": str(path)}) == ["x1.hsn", "x0.hsn", "x2.hsn"]
    assert nodes.pbs_hosts({}) is None


def test_missing_pbs_nodefile_is_a_config_error_naming_the_path(tmp_path: Path) -> None:
    missing = tmp_path / "gone"
    with pytest.raises(ConfigError, match="cannot read node file") as caught:
        nodes.pbs_hosts({"PBS_NODEFILE": str(missing)})
    assert str(missing) in str(caught.value)


def test_unreadable_pbs_nodefile_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(str(tmp_path))):
        nodes.pbs_hosts({"PBS_NODEFILE": str(tmp_path)})  # a directory cannot be read


def test_empty_pbs_nodefile_is_a_config_error(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "", "  ")
    with pytest.raises(ConfigError, match="lists no hosts"):
        nodes.pbs_hosts({"PBS_NODEFILE": str(path)})


def test_cobalt_partname_gives_cray_nids() -> None:
    env = {"COBALT_PARTNAME": "3824-3827,3830"}
    assert nodes.cobalt_hosts(env) == [
        "nid03824", "nid03825", "nid03826", "nid03827", "nid03830",
    ]  # fmt: skip
    assert nodes.cobalt_hosts({"COBALT_PARTNAME": "12"}) == ["nid00012"]
    assert nodes.cobalt_hosts({"COBALT_PARTNAME": "123456"}) == ["nid123456"]
    assert nodes.cobalt_hosts({}) is None


def test_cobalt_nodefile_comes_before_partname(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "cc001", "cc001", "cc002")
    env = {"COBALT_NODEFILE": str(path), "COBALT_PARTNAME": "12"}
    assert nodes.cobalt_hosts(env) == ["cc001", "cc002"]


@pytest.mark.parametrize("text", ["12-10", "ANL-R00", "1,,2", "3-"])
def test_bad_cobalt_partname_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError, match="COBALT_PARTNAME") as caught:
        nodes.cobalt_hosts({"COBALT_PARTNAME": text})
    assert repr(text) in str(caught.value)


# --- LSF ---------------------------------------------------------------------------------


def test_lsf_drops_the_launch_node_with_fewer_slots() -> None:
    env = {"LSB_MCPU_HOSTS": "batch3 1 a01n01 42 a01n02 42"}
    assert nodes.lsf_hosts(env) == ["a01n01", "a01n02"]


def test_lsf_keeps_a_first_host_that_is_not_smaller_than_every_other() -> None:
    assert nodes.lsf_hosts({"LSB_MCPU_HOSTS": "h1 42 h2 42"}) == ["h1", "h2"]
    # Fewer than one host but not than all of them: an ordinary, partly used node.
    assert nodes.lsf_hosts({"LSB_MCPU_HOSTS": "h1 4 h2 8 h3 2"}) == ["h1", "h2", "h3"]
    assert nodes.lsf_hosts({"LSB_MCPU_HOSTS": "only 1"}) == ["only"]


def test_lsf_hosts_counts_one_word_per_slot() -> None:
    env = {"LSB_HOSTS": "batch3 " + "a01n01 " * 3 + "a01n02 " * 3}
    assert nodes.lsf_hosts(env) == ["a01n01", "a01n02"]
    assert nodes.lsf_hosts({"LSB_HOSTS": "h1 h1 h2 h2"}) == ["h1", "h2"]


def test_lsf_prefers_mcpu_hosts() -> None:
    env = {"LSB_MCPU_HOSTS": "a 2 b 2", "LSB_HOSTS": "c c"}
    assert nodes.lsf_hosts(env) == ["a", "b"]
    assert nodes.lsf_hosts({}) is None


@pytest.mark.parametrize(("text", "reason"), [("h1 1 h2", "odd"), ("h1 one", "not a number")])
def test_bad_lsf_mcpu_hosts_is_a_config_error(text: str, reason: str) -> None:
    with pytest.raises(ConfigError, match=reason):
        nodes.lsf_hosts({"LSB_MCPU_HOSTS": text})


# --- allocation_hosts and discover_nodes -------------------------------------------------


def test_sources_are_tried_in_a_fixed_order() -> None:
    # Flux first: it often runs inside another allocation (tests/unit/test_flux_nodes.py).
    assert list(nodes.NODE_SOURCES) == ["flux", "slurm", "pbs", "cobalt", "lsf"]


def test_allocation_hosts_picks_the_first_matching_source(tmp_path: Path) -> None:
    path = _node_file(tmp_path, "p1", "p2")
    env = {"PBS_NODEFILE": str(path), "LSB_HOSTS": "l1 l1"}
    assert nodes.allocation_hosts(env) == ("pbs", ["p1", "p2"])
    env["SLURM_JOB_NODELIST"] = "s[1-2]"
    assert nodes.allocation_hosts(env) == ("slurm", ["s1", "s2"])
    assert nodes.allocation_hosts({"COBALT_PARTNAME": "7"}) == ("cobalt", ["nid00007"])
    assert nodes.allocation_hosts({"LSB_HOSTS": "l1 l1"}) == ("lsf", ["l1"])
    assert nodes.allocation_hosts({}) == ("local", [nodes.local_hostname()])


def test_discover_nodes_uses_slurm_counts_per_node(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_gpu_count", lambda: 0)
    env = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "72(x2),36"}
    assert nodes.discover_nodes(environ=env) == [
        NodeSpec("n1", 72, 0), NodeSpec("n2", 72, 0), NodeSpec("n3", 36, 0),
    ]  # fmt: skip


def test_discover_nodes_uses_the_first_count_when_lengths_differ(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nodes, "local_gpu_count", lambda: 0)
    env = {"SLURM_JOB_NODELIST": "n[1-3]", "SLURM_JOB_CPUS_PER_NODE": "64,32"}
    assert [n.cpus for n in nodes.discover_nodes(environ=env)] == [64, 64, 64]


def test_discover_nodes_settings_win_over_slurm_counts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_gpu_count", lambda: 8)
    env = {"SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_CPUS_PER_NODE": "72(x2)"}
    assert nodes.discover_nodes(16, 4, env) == [NodeSpec("n1", 16, 4), NodeSpec("n2", 16, 4)]
    assert [n.gpus for n in nodes.discover_nodes(16, 0, env)] == [8, 8]


def test_discover_nodes_without_slurm_counts_uses_local_cpus(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(nodes, "local_cpu_count", lambda: 12)
    monkeypatch.setattr(nodes, "local_gpu_count", lambda: 2)
    assert nodes.discover_nodes(environ={"SLURM_JOB_NODELIST": "n1"}) == [NodeSpec("n1", 12, 2)]
    # SLURM_JOB_CPUS_PER_NODE only counts inside a Slurm allocation.
    path = _node_file(tmp_path, "p1")
    env = {"PBS_NODEFILE": str(path), "SLURM_JOB_CPUS_PER_NODE": "99"}
    assert nodes.discover_nodes(environ=env) == [NodeSpec("p1", 12, 2)]


def test_discover_nodes_bad_slurm_counts_name_the_variable() -> None:
    env = {"SLURM_JOB_NODELIST": "n1", "SLURM_JOB_CPUS_PER_NODE": "lots"}
    with pytest.raises(ConfigError, match=r"SLURM_JOB_CPUS_PER_NODE: .*'lots'"):
        nodes.discover_nodes(environ=env)


# --- This host ---------------------------------------------------------------------------


def test_local_gpu_count_counts_numbered_nvidia_devices(tmp_path: Path) -> None:
    for name in ["nvidia0", "nvidia1", "nvidia12", "nvidiactl", "nvidia-uvm", "nvidia-caps"]:
        (tmp_path / name).touch()
    (tmp_path / "null").touch()
    assert nodes.local_gpu_count(tmp_path) == 3


def test_local_gpu_count_is_zero_without_devices(tmp_path: Path) -> None:
    assert nodes.local_gpu_count(tmp_path) == 0
    assert nodes.local_gpu_count(tmp_path / "missing") == 0


def test_local_node_name_prefers_slurmd_nodename(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_hostname", lambda: "real-host")
    assert nodes.local_node_name({"SLURMD_NODENAME": "sim3"}) == "sim3"
    assert nodes.local_node_name({}) == "real-host"
    assert nodes.local_node_name({"SLURMD_NODENAME": ""}) == "real-host"


def test_node_index_matches_exactly_then_by_short_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_hostname", lambda: "x1.hsn.example.org")
    hosts = ["x0.hsn.example.org", "x1.hsn.example.org", "x2"]
    assert nodes.node_index(hosts, {}) == 1
    assert nodes.node_index(["x0", "x1", "x2"], {}) == 1
    assert nodes.node_index(["x0.other", "x1.other"], {}) == 1
    # An exact match wins over an earlier host with the same short name.
    assert nodes.node_index(["x1.other", "x1.hsn.example.org"], {}) == 1


def test_node_index_short_local_name_against_qualified_hosts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(nodes, "local_hostname", lambda: "a01n02")
    assert nodes.node_index(["a01n01.summit", "a01n02.summit"], {}) == 1


def test_node_index_is_none_outside_the_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_hostname", lambda: "batch3")
    assert nodes.node_index(["a01n01", "a01n02"], {}) is None
    assert nodes.node_index([], {}) is None
    # "x1" is not a prefix match for "x10".
    monkeypatch.setattr(nodes, "local_hostname", lambda: "x1")
    assert nodes.node_index(["x10", "x11"], {}) is None


def test_node_index_uses_slurmd_nodename(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(nodes, "local_hostname", lambda: "laptop")
    hosts = nodes.parse_slurm_nodelist("sim[1-3]")
    assert nodes.node_index(hosts, {"SLURMD_NODENAME": "sim2"}) == 1
