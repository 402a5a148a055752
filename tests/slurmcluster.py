"""A real Slurm cluster on this host for the tests: munged, slurmctld, and N slurmd nodes.

Every daemon runs from a private temp directory with its own config (``SLURM_CONF``), ports
chosen free, and stdio to files. Nodes are ``n1..nN`` sharing 127.0.0.1 on distinct slurmd
ports, so multi-node jobs see ``SLURM_JOB_NODELIST=n[1-N]``. Stopped by pid file, never by name.

A port is only known free when it is chosen: another process may bind it before slurmctld or
a slurmd does. Ports are picked below the kernel's ephemeral range (where outgoing connections
and ``bind(0)`` take theirs), and a daemon that exits saying "Address already in use" makes
the start try again with new ports, a bounded number of times.
"""

from __future__ import annotations

import os
import pwd
import random
import shutil
import signal
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from waiting import eventually

#: How many sets of ports a start tries before it gives up on clashes.
PORT_ATTEMPTS = 5
#: What slurmctld and slurmd log when their port is taken (then they exit).
PORT_TAKEN = "Address already in use"


def slurm_installed() -> bool:
    """True when slurmctld, slurmd, sbatch and munged are on this machine."""
    return all(
        shutil.which(b) or Path("/usr/sbin", b).exists()
        for b in ("slurmctld", "slurmd", "sbatch", "munged")
    )


def _daemon(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env, start_new_session=True
        )


@dataclass
class SlurmCluster:
    """A running test cluster."""

    directory: Path
    nodes: list[str]
    cpus_per_node: int
    env: dict[str, str]
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def conf(self) -> Path:
        """The slurm.conf every client must use (exported as SLURM_CONF)."""
        return self.directory / "slurm.conf"

    def run(self, *cmd: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """Run a Slurm client command against this cluster."""
        return subprocess.run(
            list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )

    def wait_idle(self, timeout: float = 30) -> None:
        """Block until every node reports idle."""
        if not eventually(self.idle, timeout, interval=0.3):
            raise RuntimeError(f"slurm nodes not idle after {timeout}s: {self.diagnostics()}")

    def idle(self) -> bool:
        """True when ``sinfo`` reports every node idle (False when it gets no answer in 5 s:
        whatever holds slurmctld's port may accept and never reply)."""
        try:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=5).stdout.split()
        except subprocess.TimeoutExpired:
            return False
        states = dict(zip(out[::2], out[1::2], strict=False))
        return bool(states) and all(states.get(n) == "idle" for n in self.nodes)

    def diagnostics(self) -> str:
        """The tail of each daemon log (for failure messages)."""
        parts = []
        for log in sorted(self.directory.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every daemon and remove the directory."""
        _terminate(list(reversed(self.procs)))
        shutil.rmtree(self.directory, ignore_errors=True)


def _terminate(procs: list[subprocess.Popen[bytes]], sig: int = signal.SIGTERM) -> None:
    """Send ``sig`` to each daemon's process group, then wait for it (SIGKILL after 10 s)."""
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, sig)
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _munge(directory: Path, env: dict[str, str]) -> tuple[Path, subprocess.Popen[bytes]]:
    munge_dir = directory / "munge"
    munge_dir.mkdir(mode=0o755)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user = pwd.getpwnam("munge")
    for path in (munge_dir, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    sock = munge_dir / "munge.socket"
    cmd = [
        "runuser",
        "-u",
        "munge",
        "--",
        "/usr/sbin/munged",
        "-F",
        f"--key-file={key}",
        f"--socket={sock}",
        f"--pid-file={munge_dir / 'munged.pid'}",
        f"--log-file={munge_dir / 'munged.log'}",
        f"--seed-file={munge_dir / 'seed'}",
    ]
    proc = _daemon(cmd, directory / "munged.log", env)

    def listening() -> bool:
        if proc.poll() is not None and not sock.exists():
            raise RuntimeError("munged exited: " + (directory / "munged.log").read_text())
        return sock.exists()

    if not eventually(listening, timeout=10, interval=0.05):
        _terminate([proc])
        raise RuntimeError("munged did not start: " + (directory / "munged.log").read_text())
    return sock, proc


def _ephemeral_low() -> int:
    """The first port of the kernel's ephemeral range (32768 when it cannot be read)."""
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _bindable(port: int) -> bool:
    """True when nothing holds ``port`` on any address (Slurm daemons bind INADDR_ANY)."""
    with socket.socket() as sock:
        try:
            sock.bind(("", port))
        except OSError:
            return False
    return True


def _pick_ports(count: int) -> list[int]:
    """``count`` distinct ports that are free now, below the ephemeral range if there is room.

    Outgoing connections (the tests' own database clients, srun) take ephemeral ports, so a
    port below that range is only taken by a listener that chose the same number.
    """
    rng = random.Random()
    low = _ephemeral_low()
    pool = range(10000, low) if low - 10000 >= 1000 else range(1024, 65536)
    ports: list[int] = []
    while len(ports) < count:
        port = rng.choice(pool)
        if port not in ports and _bindable(port):
            ports.append(port)
    return ports


def _write_conf(directory: Path, sock: Path, nodes: int, cpus: int, memory: int) -> list[str]:
    """Write slurm.conf with newly picked ports; returns the node names."""
    ctld_port, *ports = _pick_ports(1 + nodes)
    names = [f"n{i}" for i in range(1, nodes + 1)]
    lines = [
        "ClusterName=balsamtest",
        "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        f"AuthInfo=socket={sock}",
        "SlurmUser=root",
        "SlurmdUser=root",
        f"StateSaveLocation={directory}/state",
        f"SlurmdSpoolDir={directory}/spool-%n",
        f"SlurmctldPidFile={directory}/slurmctld.pid",
        f"SlurmdPidFile={directory}/slurmd-%n.pid",
        f"SlurmctldLogFile={directory}/slurmctld.log",
        f"SlurmdLogFile={directory}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none",
        "MailProg=/bin/true",
        "ReturnToService=2",
        "KillWait=5",
        "OverTimeLimit=0",
        "SlurmdParameters=config_overrides",
        "InactiveLimit=0",
        "MinJobAge=300",
        "SlurmdTimeout=30",
    ]
    for name, port in zip(names, ports, strict=True):
        lines.append(
            f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
            f"RealMemory={memory} State=UNKNOWN"
        )
    lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    (directory / "state").mkdir(exist_ok=True)
    (directory / "slurm.conf").write_text("\n".join(lines) + "\n")
    return names


class _PortTaken(Exception):
    """A Slurm daemon exited because another process held its port."""


def _start_slurm(cluster: SlurmCluster) -> list[tuple[str, subprocess.Popen[bytes]]]:
    """Start slurmctld and one slurmd per node; returns them with their log names."""
    conf, directory = str(cluster.conf), cluster.directory
    daemons = [
        (
            "slurmctld",
            _daemon(
                ["slurmctld", "-D", "-i", "-f", conf], directory / "slurmctld.out.log", cluster.env
            ),
        )
    ]
    for name in cluster.nodes:
        daemons.append(
            (
                f"slurmd-{name}",
                _daemon(
                    ["slurmd", "-D", "-N", name, "-f", conf],
                    directory / f"slurmd-{name}.out.log",
                    cluster.env,
                ),
            )
        )
    cluster.procs.extend(proc for _, proc in daemons)
    return daemons


def _await_idle(cluster: SlurmCluster, daemons: list[tuple[str, subprocess.Popen[bytes]]]) -> None:
    """Wait until every node is idle; raise :class:`_PortTaken` when a daemon lost its port."""

    def ready() -> bool:
        for log_name, proc in daemons:
            if proc.poll() is None:
                continue
            logs = (cluster.directory / f"{log_name}{tail}" for tail in (".log", ".out.log"))
            text = "".join(log.read_text(errors="replace") for log in logs if log.exists())
            if PORT_TAKEN in text:
                raise _PortTaken(f"{log_name}: {PORT_TAKEN}")
            raise RuntimeError(f"{log_name} exited ({proc.returncode}): {cluster.diagnostics()}")
        return cluster.idle()

    if not eventually(ready, timeout=30, interval=0.3):
        raise RuntimeError(f"slurm nodes not idle after 30s: {cluster.diagnostics()}")


def _set_aside(
    cluster: SlurmCluster, daemons: list[tuple[str, subprocess.Popen[bytes]]], attempt: int
) -> None:
    """Kill this attempt's Slurm daemons and move their logs to ``attempt-N/``.

    SIGKILL: they have run nothing, and slurmd takes seconds to stop on SIGTERM when it
    cannot reach a controller.
    """
    procs = [proc for _, proc in daemons]
    _terminate(procs, signal.SIGKILL)
    cluster.procs[:] = [p for p in cluster.procs if p not in procs]
    aside = cluster.directory / f"attempt-{attempt}"
    aside.mkdir()
    for log in cluster.directory.glob("slurm*.log"):
        log.rename(aside / log.name)


def _start_on_new_ports(
    cluster: SlurmCluster, sock: Path, nodes: int, memory_mb: int, attempt: int
) -> str | None:
    """Write a conf with new ports and start Slurm on it; None once every node is idle, else
    why not (a port was taken: this attempt's daemons are stopped again)."""
    cluster.nodes = _write_conf(cluster.directory, sock, nodes, cluster.cpus_per_node, memory_mb)
    daemons = _start_slurm(cluster)
    try:
        _await_idle(cluster, daemons)
    except _PortTaken as clash:
        _set_aside(cluster, daemons, attempt)
        return str(clash)
    return None


def start_cluster(nodes: int = 2, cpus_per_node: int = 2, memory_mb: int = 1000) -> SlurmCluster:
    """Start munged, slurmctld and ``nodes`` slurmd daemons; return when all are idle.

    A daemon whose port was taken between choosing and binding it makes the start choose new
    ports and start slurmctld and the slurmd daemons again (up to :data:`PORT_ATTEMPTS` times).
    """
    if os.geteuid() != 0:
        raise RuntimeError("the test Slurm cluster needs root (slurmd runs jobs as their user)")
    if not slurm_installed():
        raise RuntimeError("Slurm is not installed: apt-get install slurm-wlm munge")
    directory = Path(tempfile.mkdtemp(prefix="balsam-slurm-", dir="/tmp"))
    directory.chmod(0o755)
    env = dict(os.environ)
    sock, munged = _munge(directory, env)
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    cluster = SlurmCluster(directory, [], cpus_per_node, env, procs=[munged])
    clashes: list[str] = []
    try:
        for attempt in range(1, PORT_ATTEMPTS + 1):
            clash = _start_on_new_ports(cluster, sock, nodes, memory_mb, attempt)
            if clash is None:
                return cluster
            clashes.append(clash)
        raise RuntimeError(f"Slurm's ports were taken {PORT_ATTEMPTS} times over: {clashes}")
    except BaseException:
        cluster.stop()
        raise
