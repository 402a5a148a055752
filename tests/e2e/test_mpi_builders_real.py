"""The command ``MpichLauncher`` builds, run by the real MPICH (``pip install mpich mpi4py``).

The MPICH wheel lives beside the running Python; a machine without it fails these tests
rather than skipping them, since they are how we know the builder's flags are MPICH's.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from balsam.platform.mpi import MpichLauncher, MpiRun, find_mpi_launcher

VENV_BIN = Path(sys.executable).parent

#: Rank 0 prints what every rank saw, as one JSON line (ranks' own lines may interleave).
PROGRAM = """\
import json, os
from mpi4py import MPI

comm = MPI.COMM_WORLD
seen = {"rank": comm.Get_rank(), "size": comm.Get_size(), "mark": os.environ.get("BALSAM_MARK")}
everyone = comm.gather(seen, root=0)
if comm.Get_rank() == 0:
    print(json.dumps(everyone), flush=True)
"""


@pytest.fixture(scope="module")
def mpich() -> MpichLauncher:
    """The venv's Hydra ``mpiexec``; missing is a failure."""
    mpiexec = shutil.which("mpiexec", path=str(VENV_BIN))
    assert mpiexec is not None, f"no mpiexec in {VENV_BIN}: pip install mpich mpi4py"
    return MpichLauncher(executable=mpiexec)


@pytest.mark.parametrize("ranks", [2, 3])
@pytest.mark.parametrize("cpu_bind", ["none", "core", "depth"])
def test_every_rank_sees_the_size_and_the_variable(
    mpich: MpichLauncher, tmp_path: Path, ranks: int, cpu_bind: str
) -> None:
    program = tmp_path / "ranks.py"
    program.write_text(PROGRAM)
    run = MpiRun(
        argv=[sys.executable, str(program)],
        hosts=[socket.gethostname()],
        ranks_per_node=ranks,
        env={"BALSAM_MARK": "two words"},
        cpu_bind=cpu_bind,
    )
    # The variable must come through -genv, not from mpiexec's own environment.
    environ = {k: v for k, v in os.environ.items() if k != "BALSAM_MARK"}
    done = subprocess.run(
        mpich.command(run),
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        env=environ,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert sorted(s["rank"] for s in seen) == list(range(ranks))
    assert {s["size"] for s in seen} == {ranks}
    assert {s["mark"] for s in seen} == {"two words"}


def test_the_named_mpich_launcher_is_the_venvs(mpich: MpichLauncher) -> None:
    found = find_mpi_launcher("mpich", path=str(VENV_BIN), environ={})
    assert found == mpich
