"""Which compute nodes a launcher may use, and how big they are.

A launcher asks :func:`discover_nodes` once at start-up. Each entry of :data:`NODE_SOURCES`
reads the environment of one kind of batch allocation and returns its hostnames, or None when
the launcher is not inside that kind of allocation. They are tried in order; when none applies
the launcher runs on the local host as one node. Nothing here runs a command (no ``scontrol``,
no ``flux getattr``): the batch systems, or the batch script, put everything needed in
variables and node files.

Sources and the names they give hosts:

``flux``
    Flux sets no variable with the host list for a batch script: its initial program gets
    ``FLUX_URI`` and little else (flux-environment(7)), and the hosts are read with
    ``flux getattr hostlist``. The Flux adapter's script therefore runs that command itself
    and exports the answer as ``BALSAM_FLUX_HOSTLIST``, with ``BALSAM_FLUX_URI`` set to the
    ``FLUX_URI`` it was asked in. The list is an RFC 29 host list (``node[01-04,07]``),
    expanded by :func:`parse_flux_hostlist`; a host named more than once (several brokers on
    one host) is one node. It is used only while ``FLUX_URI`` is still that instance's: a
    job submitted from inside the allocation inherits the variables, and must not take
    them for its own hosts. Flux comes first because it often runs inside another batch
    system's allocation (``srun flux start``, Flux in a PBS job), whose variables describe
    the whole outer allocation rather than this job's share of it.
``slurm``
    ``SLURM_JOB_NODELIST`` (older Slurm: ``SLURM_NODELIST``), a compressed host list such as
    ``nid[0098-0101],login3`` expanded by :func:`parse_slurm_nodelist`. Zero padding is kept,
    so hosts are named exactly as ``srun -w`` expects.
``pbs``
    ``PBS_NODEFILE``, a file with one hostname per line repeated once per slot; each host
    is kept once, in first-seen order, with whatever (often fully qualified) name PBS wrote.
``cobalt``
    ``COBALT_NODEFILE``, a file like PBS's, when set; otherwise ``COBALT_PARTNAME``, Cray node
    ids such as ``3824-3827,3830`` named ``nid`` + the id padded to five digits (``nid03824``).
``lsf``
    ``LSB_MCPU_HOSTS`` (``host slots`` pairs), else ``LSB_HOSTS`` (one word per slot). LSF
    lists its launch node first; see :func:`lsf_hosts` for when it is left out.

A variable set to the empty string counts as unset. A variable that is set but malformed, or a
node file that cannot be read, raises :class:`~balsam.errors.ConfigError` rather than quietly
falling back to the local host, because a launcher that ignores its allocation wastes it.

Node sizes come from the site's platform settings, where ``0`` means "detect": CPUs from
``SLURM_JOB_CPUS_PER_NODE`` inside Slurm, else this process's affinity mask; GPUs from the
NVIDIA device files in ``/dev``. Detection looks at the host running the launcher and assumes
the allocation's nodes are alike.

:func:`local_node_name` and :func:`node_index` tell a process which entry of the host list is
its own node, or that it runs outside the list (on a PBS MOM or LSF batch node).
"""

from __future__ import annotations

import itertools
import os
import re
import socket
from collections.abc import Callable, Mapping
from pathlib import Path

from balsam.domain.resources import NodeSpec
from balsam.errors import ConfigError

#: A function that returns the allocation's hostnames from the environment, or None when the
#: launcher does not run inside that kind of allocation.
NodeSource = Callable[[Mapping[str, str]], list[str] | None]

_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
_CPU_COUNT = re.compile(r"(\d+)(?:\(x(\d+)\))?")
_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_NVIDIA_DEVICE = re.compile(r"nvidia\d+")
_CRAY_NID_WIDTH = 5


def _environment(environ: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if environ is None else environ


def _setting(env: Mapping[str, str], *names: str) -> tuple[str, str] | None:
    """The first of ``names`` set to something other than blanks, with its value."""
    for name in names:
        value = env.get(name, "").strip()
        if value:
            return name, value
    return None


# --- Slurm -------------------------------------------------------------------------------


def _split_top_level(text: str, kind: str = "Slurm") -> list[str]:
    """Split a host list at the commas outside brackets, checking the brackets."""
    groups, depth, start = [], 0, 0
    for i, char in enumerate(text):
        if char == "[":
            depth += 1
            if depth > 1:
                raise ConfigError(f"nested '[' in {kind} host list {text!r}")
        elif char == "]":
            depth -= 1
            if depth < 0:
                raise ConfigError(f"unbalanced ']' in {kind} host list {text!r}")
        elif char == "," and depth == 0:
            groups.append(text[start:i])
            start = i + 1
    if depth:
        raise ConfigError(f"unbalanced '[' in {kind} host list {text!r}")
    groups.append(text[start:])
    return groups


def _expand_range_list(ranges: str, text: str) -> list[str]:
    """``01-03,7`` -> 01, 02, 03, 7: each range padded to the width of its first number."""
    out: list[str] = []
    for item in ranges.split(","):
        match = _RANGE.fullmatch(item.strip())
        if match is None:
            raise ConfigError(f"bad range {item!r} in Slurm host list {text!r}")
        low_text, high_text = match.group(1), match.group(2) or match.group(1)
        low, high = int(low_text), int(high_text)
        if low > high:
            raise ConfigError(f"reversed range {item!r} in Slurm host list {text!r}")
        out.extend(str(n).zfill(len(low_text)) for n in range(low, high + 1))
    return out


def _expand_group(group: str, text: str) -> list[str]:
    """All the names of one group such as ``r[1-2]n[01-02]``, the last bracket varying fastest."""
    # re.split with one capture group alternates literal text and bracket contents.
    parts = _BRACKET.split(group)
    choices: list[list[str]] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if any(c.isspace() for c in part):
                raise ConfigError(f"whitespace inside host name {group!r} in {text!r}")
            choices.append([part])
        else:
            choices.append(_expand_range_list(part, text))
    return ["".join(names) for names in itertools.product(*choices)]


def parse_slurm_nodelist(text: str) -> list[str]:
    """Expand a Slurm compressed host list, keeping its order.

    ``n[1-3,7]`` gives n1, n2, n3, n7; zero padding is kept (``nid[0098-0101]`` gives
    nid0098 ... nid0101); groups are separated by commas outside brackets
    (``a[1-2],b3``); several brackets in one name expand with the last varying fastest
    (``r[1-2]n[1-2]`` gives r1n1, r1n2, r2n1, r2n2). Whitespace around groups is ignored.

    Raises:
        ConfigError: empty text, an empty group, unbalanced or nested brackets, a range that
            is not numeric or runs backwards (``[5-3]``); the message quotes ``text``.
    """
    if not text.strip():
        raise ConfigError(f"empty Slurm host list {text!r}")
    hosts: list[str] = []
    for group in _split_top_level(text):
        group = group.strip()
        if not group:
            raise ConfigError(f"empty entry in Slurm host list {text!r}")
        hosts.extend(_expand_group(group, text))
    return hosts


def parse_slurm_cpus_per_node(text: str) -> list[int]:
    """Expand ``SLURM_JOB_CPUS_PER_NODE``: ``72(x2),36`` gives [72, 72, 36], ``4`` gives [4].

    Raises:
        ConfigError: text that is not comma-separated ``count`` or ``count(xrepeat)``.
    """
    counts: list[int] = []
    for item in text.split(","):
        match = _CPU_COUNT.fullmatch(item.strip())
        if match is None:
            raise ConfigError(f"bad Slurm CPU counts {text!r}: cannot read {item!r}")
        counts.extend([int(match.group(1))] * int(match.group(2) or 1))
    return counts


def slurm_hosts(env: Mapping[str, str]) -> list[str] | None:
    """Hosts of a Slurm job from ``SLURM_JOB_NODELIST`` (or the older ``SLURM_NODELIST``)."""
    setting = _setting(env, "SLURM_JOB_NODELIST", "SLURM_NODELIST")
    if setting is None:
        return None
    name, value = setting
    try:
        return parse_slurm_nodelist(value)
    except ConfigError as error:
        raise ConfigError(f"{name}: {error}") from error


# --- Flux --------------------------------------------------------------------------------

#: Set by the Flux adapter's batch script to ``flux getattr hostlist`` (see the module's text).
FLUX_HOSTLIST_VARIABLE = "BALSAM_FLUX_HOSTLIST"
#: Set by the same script to the ``FLUX_URI`` of the instance the host list was taken in.
FLUX_URI_VARIABLE = "BALSAM_FLUX_URI"

# prefix[idlist]suffix: prefix and suffix hold no bracket or comma (RFC 29).
_FLUX_EXPRESSION = re.compile(r"([^\[\],]*)(?:\[([^\[\]]*)\])?([^\[\],]*)")


def _flux_ids(idlist: str, text: str) -> list[str]:
    """An RFC 29 idlist (``005,4,11-13``): the first id's leading zeros set every id's width
    (005, 004, 011, 012, 013)."""
    ids: list[int] = []
    width = 0
    for position, item in enumerate(idlist.split(",")):
        match = _RANGE.fullmatch(item.strip())
        if match is None:
            raise ConfigError(f"bad range {item!r} in Flux host list {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if low > high:
            raise ConfigError(f"reversed range {item!r} in Flux host list {text!r}")
        if position == 0 and match.group(1).startswith("0"):
            width = len(match.group(1))
        ids.extend(range(low, high + 1))
    return [str(n).zfill(width) for n in ids]


def parse_flux_hostlist(text: str) -> list[str]:
    """Expand an RFC 29 host list (Flux's), keeping its order and any repeats.

    ``node[1-3,7]`` gives node1, node2, node3, node7; ``foo[0-1]-eth2`` gives foo0-eth2,
    foo1-eth2; ``[00-2]`` gives 00, 01, 02 and ``n[005,4]`` gives n005, n004 (the first id's
    zero padding applies to all). Each comma-separated expression holds at most one bracket.

    Raises:
        ConfigError: empty text or entry, whitespace in a name, unbalanced, nested or repeated
            brackets, a range that is not numeric or runs backwards; the message quotes
            ``text``.
    """
    if not text.strip():
        raise ConfigError(f"empty Flux host list {text!r}")
    hosts: list[str] = []
    for expression in _split_top_level(text, "Flux"):
        expression = expression.strip()
        if not expression:
            raise ConfigError(f"empty entry in Flux host list {text!r}")
        match = _FLUX_EXPRESSION.fullmatch(expression)
        if match is None:
            raise ConfigError(f"more than one [...] in {expression!r} in Flux host list {text!r}")
        prefix, idlist, suffix = match.groups()
        if any(c.isspace() for c in prefix + suffix):
            raise ConfigError(f"whitespace inside host name {expression!r} in {text!r}")
        if idlist is None:
            hosts.append(expression)
        else:
            hosts.extend(prefix + n + suffix for n in _flux_ids(idlist, text))
    return hosts


def flux_hosts(env: Mapping[str, str]) -> list[str] | None:
    """Hosts of a Flux batch job from ``BALSAM_FLUX_HOSTLIST``, once each, in order; None
    unless ``FLUX_URI`` is still the instance the list was taken in (``BALSAM_FLUX_URI``)."""
    setting = _setting(env, FLUX_HOSTLIST_VARIABLE)
    if setting is None:
        return None
    uri, taken_in = _setting(env, "FLUX_URI"), _setting(env, FLUX_URI_VARIABLE)
    if uri is None or taken_in is None or uri[1] != taken_in[1]:
        # Inherited from another Flux instance by a job submitted from inside it.
        return None
    try:
        hosts = parse_flux_hostlist(setting[1])
    except ConfigError as error:
        raise ConfigError(f"{FLUX_HOSTLIST_VARIABLE}: {error}") from error
    return list(dict.fromkeys(hosts))


# --- PBS and Cobalt ----------------------------------------------------------------------


def read_node_file(path: str | Path) -> list[str]:
    """The hosts of a PBS-style node file (one per line per slot), once each, in order.

    Raises:
        ConfigError: the file cannot be read or lists no host; the message names ``path``.
    """
    try:
        lines = Path(path).read_text().splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"cannot read node file {str(path)!r}: {error}") from error
    hosts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not hosts:
        raise ConfigError(f"node file {str(path)!r} lists no hosts")
    return hosts


def pbs_hosts(env: Mapping[str, str]) -> list[str] | None:
    """Hosts of a PBS job from the file named by ``PBS_NODEFILE``."""
    setting = _setting(env, "PBS_NODEFILE")
    return None if setting is None else read_node_file(setting[1])


def parse_cray_nid_ranges(text: str) -> list[str]:
    """Cray node ids such as ``3824-3827,3830`` as hostnames ``nid03824`` ... ``nid03830``.

    Raises:
        ConfigError: an id that is not a number, or a range that runs backwards.
    """
    hosts: list[str] = []
    for item in text.split(","):
        match = _RANGE.fullmatch(item.strip())
        if match is None:
            raise ConfigError(f"bad node id {item!r} in {text!r}")
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if low > high:
            raise ConfigError(f"reversed node id range {item!r} in {text!r}")
        hosts.extend(f"nid{nid:0{_CRAY_NID_WIDTH}d}" for nid in range(low, high + 1))
    return hosts


def cobalt_hosts(env: Mapping[str, str]) -> list[str] | None:
    """Hosts of a Cobalt job: ``COBALT_NODEFILE`` when set, else the ids in ``COBALT_PARTNAME``."""
    node_file = _setting(env, "COBALT_NODEFILE")
    if node_file is not None:
        return read_node_file(node_file[1])
    partition = _setting(env, "COBALT_PARTNAME")
    if partition is None:
        return None
    try:
        return parse_cray_nid_ranges(partition[1])
    except ConfigError as error:
        raise ConfigError(f"COBALT_PARTNAME: {error}") from error


# --- LSF ---------------------------------------------------------------------------------


def _pairs_to_slots(text: str) -> dict[str, int]:
    """``LSB_MCPU_HOSTS`` ("h1 1 h2 42") as slots per host, in order."""
    words = text.split()
    if len(words) % 2:
        raise ConfigError(f"LSB_MCPU_HOSTS: odd number of words in {text!r}")
    slots: dict[str, int] = {}
    for host, count in zip(words[::2], words[1::2], strict=True):
        if not count.isdigit():
            raise ConfigError(f"LSB_MCPU_HOSTS: slot count {count!r} is not a number in {text!r}")
        slots[host] = slots.get(host, 0) + int(count)
    return slots


def _words_to_slots(text: str) -> dict[str, int]:
    """``LSB_HOSTS`` ("h1 h1 h2 h2") as slots per host, in first-seen order."""
    slots: dict[str, int] = {}
    for host in text.split():
        slots[host] = slots.get(host, 0) + 1
    return slots


def _without_launch_node(slots: dict[str, int]) -> list[str]:
    """Drop the first host when it has fewer slots than every other host."""
    hosts = list(slots)
    if len(hosts) > 1 and slots[hosts[0]] < min(slots[h] for h in hosts[1:]):
        return hosts[1:]
    return hosts


def lsf_hosts(env: Mapping[str, str]) -> list[str] | None:
    """Hosts of an LSF job from ``LSB_MCPU_HOSTS``, else ``LSB_HOSTS``.

    LSF lists the launch (batch) node first, even where jobs cannot run on it: Summit shows
    ``batch3 1 a01n01 42 a01n02 42``. The first host is therefore left out when it has fewer
    slots than every other host. When the first host has as many slots as some other host it
    is kept, since it is then an ordinary compute node; a job on one host keeps that host.
    """
    pairs = _setting(env, "LSB_MCPU_HOSTS")
    if pairs is not None:
        return _without_launch_node(_pairs_to_slots(pairs[1]))
    words = _setting(env, "LSB_HOSTS")
    if words is not None:
        return _without_launch_node(_words_to_slots(words[1]))
    return None


#: Allocation kinds tried in order before falling back to the local host.
NODE_SOURCES: dict[str, NodeSource] = {
    # First: a Flux job often runs inside another batch system's allocation (module text).
    "flux": flux_hosts,
    "slurm": slurm_hosts,
    "pbs": pbs_hosts,
    "cobalt": cobalt_hosts,
    "lsf": lsf_hosts,
}


# --- This host and the allocation --------------------------------------------------------


def local_cpu_count() -> int:
    """CPUs this process may run on (its affinity mask, which batch systems narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux hosts
        return os.cpu_count() or 1


def local_gpu_count(dev: Path = Path("/dev")) -> int:
    """NVIDIA GPUs on this host, counted from the ``/dev/nvidia<N>`` device files; 0 if none.

    ``CUDA_VISIBLE_DEVICES`` is not consulted: it narrows what one process sees, while this
    counts what the node has for the launcher to hand out.
    """
    try:
        return sum(1 for entry in dev.iterdir() if _NVIDIA_DEVICE.fullmatch(entry.name))
    except OSError:
        return 0


def local_hostname() -> str:
    """This host's name as MPI launchers and logs know it."""
    return socket.gethostname()


def local_node_name(environ: Mapping[str, str] | None = None) -> str:
    """This process's node as the allocation's host list names it.

    ``SLURMD_NODENAME`` when set, because Slurm can simulate several nodes on one host (they
    share its hostname); otherwise :func:`local_hostname`.
    """
    setting = _setting(_environment(environ), "SLURMD_NODENAME")
    return local_hostname() if setting is None else setting[1]


def node_index(hosts: list[str], environ: Mapping[str, str] | None = None) -> int | None:
    """The index in ``hosts`` of this process's node, or None when it is not one of them.

    :func:`local_node_name` is matched exactly first; failing that its short name (before
    the first dot) is matched against each host's short name, because node files often hold
    fully qualified names while ``gethostname`` gives a short one, or the other way round.
    None means the process runs outside the list, such as on a PBS MOM or LSF batch node.
    """
    name = local_node_name(environ)
    if name in hosts:
        return hosts.index(name)
    short = name.split(".", 1)[0]
    for index, host in enumerate(hosts):
        if host.split(".", 1)[0] == short:
            return index
    return None


def allocation_hosts(environ: Mapping[str, str] | None = None) -> tuple[str, list[str]]:
    """The kind of allocation and its hostnames; ``("local", [this host])`` outside one."""
    env = _environment(environ)
    for kind, source in NODE_SOURCES.items():
        hosts = source(env)
        if hosts:
            return kind, hosts
    return "local", [local_hostname()]


def _cpus_per_host(kind: str, hosts: list[str], env: Mapping[str, str]) -> list[int]:
    """Detected CPUs for each host: Slurm's per-node counts when it gives them, else ours."""
    setting = _setting(env, "SLURM_JOB_CPUS_PER_NODE") if kind == "slurm" else None
    if setting is None:
        return [local_cpu_count()] * len(hosts)
    try:
        counts = parse_slurm_cpus_per_node(setting[1])
    except ConfigError as error:
        raise ConfigError(f"SLURM_JOB_CPUS_PER_NODE: {error}") from error
    # A count list that does not line up with the hosts cannot be mapped to them one to one;
    # the first count is the best guess for nodes that are usually alike.
    return counts if len(counts) == len(hosts) else [counts[0]] * len(hosts)


def discover_nodes(
    cpus_per_node: int = 0,
    gpus_per_node: int = 0,
    environ: Mapping[str, str] | None = None,
) -> list[NodeSpec]:
    """The nodes this launcher may use, in the allocation's host order.

    CPUs per node are ``cpus_per_node`` when above 0, else inside Slurm the counts of
    ``SLURM_JOB_CPUS_PER_NODE`` (per host when there is one count per host, otherwise the first
    count for all), else :func:`local_cpu_count`. GPUs are ``gpus_per_node`` when above 0,
    else :func:`local_gpu_count`.
    """
    env = _environment(environ)
    kind, hosts = allocation_hosts(env)
    fixed = [cpus_per_node] * len(hosts)
    cpus = fixed if cpus_per_node > 0 else _cpus_per_host(kind, hosts, env)
    gpus = gpus_per_node if gpus_per_node > 0 else local_gpu_count()
    return [NodeSpec(hostname=h, cpus=c, gpus=gpus) for h, c in zip(hosts, cpus, strict=True)]
