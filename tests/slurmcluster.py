"""A real Slurm cluster on this host for the tests: munged, slurmctld, and N slurmd nodes.

Every daemon runs from a private temp directory with its own config (``SLURM_CONF``), ports
chosen free, and stdio to files. Nodes are ``n1..nN`` sharing 127.0.0.1 on distinct slurmd
ports, so multi-node jobs see ``SLURM_JOB_NODELIST=n[1-N]``. Stopped by pid file, never by name.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from pgserver import free_port


def slurm_installed() -> bool:
    """True when slurmctld, slurmd, sbatch and munged are on this machine."""
    return all(shutil.which(b) or Path("/usr/sbin", b).exists()
               for b in ("slurmctld", "slurmd", "sbatch", "munged"))


def _daemon(cmd: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=out, env=env,
                                start_new_session=True)


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
        return subprocess.run(list(cmd), env=self.env, capture_output=True, text=True,
                              timeout=timeout, check=False)

    def wait_idle(self, timeout: float = 30) -> None:
        """Block until every node reports idle."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.run("sinfo", "-h", "-N", "-o", "%N %t", timeout=5).stdout.split()
            states = dict(zip(out[::2], out[1::2], strict=False))
            if states and all(states.get(n) == "idle" for n in self.nodes):
                return
            time.sleep(0.3)
        raise RuntimeError(f"slurm nodes not idle after {timeout}s: {self.diagnostics()}")

    def diagnostics(self) -> str:
        """The tail of each daemon log (for failure messages)."""
        parts = []
        for log in sorted(self.directory.glob("*.log")):
            tail = log.read_text(errors="replace").splitlines()[-15:]
            parts.append(f"--- {log.name}\n" + "\n".join(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Stop every daemon and remove the directory."""
        for proc in reversed(self.procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGTERM)
        for proc in self.procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        shutil.rmtree(self.directory, ignore_errors=True)


def _munge(directory: Path, env: dict[str, str]) -> tuple[Path, subprocess.Popen[bytes]]:
    munge_dir = directory / "munge"
    munge_dir.mkdir(mode=0o755)
    key = munge_dir / "munge.key"
    key.write_bytes(os.urandom(1024))
    key.chmod(0o400)
    user = pwd.getpwnam("munge")
    for path in (munge_dir, key):
        os.chown(path, user.pw_uid, user.pw_gid)
    socket = munge_dir / "munge.socket"
    cmd = ["runuser", "-u", "munge", "--", "/usr/sbin/munged", "-F", f"--key-file={key}",
           f"--socket={socket}", f"--pid-file={munge_dir / 'munged.pid'}",
           f"--log-file={munge_dir / 'munged.log'}", f"--seed-file={munge_dir / 'seed'}"]
    proc = _daemon(cmd, directory / "munged.log", env)
    deadline = time.monotonic() + 10
    while not socket.exists():
        if time.monotonic() > deadline or proc.poll() is not None:
            raise RuntimeError("munged did not start: " + (directory / "munged.log").read_text())
        time.sleep(0.05)
    return socket, proc


def _write_conf(directory: Path, socket: Path, nodes: int, cpus: int, memory: int) -> list[str]:
    ctld_port, first_node_port = free_port(), free_port()
    names = [f"n{i}" for i in range(1, nodes + 1)]
    ports = [first_node_port] + [free_port() for _ in names[1:]]
    lines = [
        "ClusterName=balsamtest", "SlurmctldHost=localhost(127.0.0.1)",
        f"SlurmctldPort={ctld_port}", "AuthType=auth/munge", "CredType=cred/munge",
        f"AuthInfo=socket={socket}", "SlurmUser=root", "SlurmdUser=root",
        f"StateSaveLocation={directory}/state", f"SlurmdSpoolDir={directory}/spool-%n",
        f"SlurmctldPidFile={directory}/slurmctld.pid", f"SlurmdPidFile={directory}/slurmd-%n.pid",
        f"SlurmctldLogFile={directory}/slurmctld.log", f"SlurmdLogFile={directory}/slurmd-%n.log",
        "ProctrackType=proctrack/linuxproc", "TaskPlugin=task/none", "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core", "SchedulerType=sched/backfill",
        "JobAcctGatherType=jobacct_gather/none", "AccountingStorageType=accounting_storage/none",
        "MpiDefault=none", "MailProg=/bin/true", "ReturnToService=2", "KillWait=5",
        "OverTimeLimit=0", "SlurmdParameters=config_overrides", "InactiveLimit=0",
        "MinJobAge=300", "SlurmdTimeout=30",
    ]
    for name, port in zip(names, ports, strict=True):
        lines.append(f"NodeName={name} NodeAddr=127.0.0.1 Port={port} CPUs={cpus} "
                     f"RealMemory={memory} State=UNKNOWN")
    lines.append("PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP")
    (directory / "state").mkdir()
    (directory / "slurm.conf").write_text("\n".join(lines) + "\n")
    return names


def start_cluster(nodes: int = 2, cpus_per_node: int = 2, memory_mb: int = 1000) -> SlurmCluster:
    """Start munged, slurmctld and ``nodes`` slurmd daemons; return when all are idle."""
    if os.geteuid() != 0:
        raise RuntimeError("the test Slurm cluster needs root (slurmd runs jobs as their user)")
    if not slurm_installed():
        raise RuntimeError("Slurm is not installed: apt-get install slurm-wlm munge")
    directory = Path(tempfile.mkdtemp(prefix="balsam-slurm-", dir="/tmp"))
    directory.chmod(0o755)
    env = dict(os.environ)
    socket, munged = _munge(directory, env)
    names = _write_conf(directory, socket, nodes, cpus_per_node, memory_mb)
    env["SLURM_CONF"] = str(directory / "slurm.conf")
    cluster = SlurmCluster(directory, names, cpus_per_node, env, procs=[munged])
    try:
        cluster.procs.append(_daemon(["slurmctld", "-D", "-i", "-f", env["SLURM_CONF"]],
                                     directory / "slurmctld.out.log", env))
        for name in names:
            cluster.procs.append(_daemon(["slurmd", "-D", "-N", name, "-f", env["SLURM_CONF"]],
                                         directory / f"slurmd-{name}.out.log", env))
        cluster.wait_idle()
    except BaseException:
        cluster.stop()
        raise
    return cluster
