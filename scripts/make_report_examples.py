"""Make the example plots of docs/report.md from a real run: a real launcher, a real batch job.

Makes a workflow database (SQLite) in a temporary directory, registers four apps and adds
about a hundred jobs in three workflows (runs of 0.5-4 s, some failing with exit code 2, one
that outlives its launcher), submits one launcher with the ``local`` scheduler (one node, a
two-minute allocation), asks ``balsam ls queues`` every two seconds while it runs (so the
batch job's running and gone states are recorded, as the service records them), then runs
``balsam report`` and copies its PNGs into docs/images/report/. Takes about three minutes.

    .venv/bin/python scripts/make_report_examples.py
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from balsam.backends.factory import init_site, open_backend
from balsam.schemas import AppCreate, JobCreate

ROOT = Path(__file__).resolve().parents[1]
IMAGES = ROOT / "docs" / "images" / "report"
BALSAM = str(Path(sys.executable).parent / "balsam")


def balsam(*args: str, env: dict[str, str]) -> str:
    """Run ``balsam ARGS``; its output (SystemExit on failure)."""
    done = subprocess.run([BALSAM, *args], env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SystemExit(f"balsam {' '.join(args)} failed: {done.stderr.strip()}")
    return done.stdout


def add_campaign(site_path: Path) -> int:
    """Register the apps and add the jobs; returns how many jobs."""
    from balsam.config import load_site

    backend = open_backend(load_site(site_path))
    backend.create_app(AppCreate(name="simulate", executable="sleep"))
    backend.create_app(AppCreate(name="analyze", executable="sleep"))
    backend.create_app(AppCreate(name="flaky", executable="sh -c 'sleep 1; exit 2'"))
    backend.create_app(AppCreate(name="hang", executable="sleep 600"))
    rng = random.Random(5)
    # wall_time_minutes=0: no estimate, so every job fits the short allocation.
    common = {"wall_time_minutes": 0, "node_packing_count": 2}
    specs = [
        JobCreate(
            name=f"sim{i}",
            workflow="sweep",
            application="simulate",
            args=f"{rng.uniform(0.5, 4):.1f}",
            **common,
        )
        for i in range(70)
    ]
    specs += [
        JobCreate(
            name=f"ana{i}",
            workflow="analysis",
            application="analyze",
            args=f"{rng.uniform(0.5, 2):.1f}",
            **common,
        )
        for i in range(25)
    ]
    specs += [
        JobCreate(
            name=f"flaky{i}",
            workflow="validation",
            application="flaky",
            max_error_retries=1,
            **common,
        )
        for i in range(5)
    ]
    specs.append(
        JobCreate(
            name="hang", workflow="validation", application="hang", max_timeout_retries=0, **common
        )
    )
    backend.create_jobs(specs)
    backend.close()
    return len(specs)


def run_launcher(env: dict[str, str]) -> None:
    """Submit one local launcher and follow it with ``balsam ls queues`` until it is gone."""
    out = balsam(
        "submit-launch", "-A", "demo", "-q", "local", "-t", "2", "-n", "1", "--job-mode", "serial",
        env=env,
    )  # fmt: skip
    print(out.strip())
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        listing = balsam("ls", "queues", env=env)
        if any(word in listing for word in (" gone", " finished", " failed")):
            return
        time.sleep(2)
    raise SystemExit("the launcher did not end within 10 minutes")


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        site = init_site(Path(tmp) / "wf")
        env = {**os.environ, "BALSAM_DB_PATH": str(site.path)}
        print(f"{add_campaign(site.path)} jobs in {site.path}")
        run_launcher(env)
        out = Path(tmp) / "report"
        print(balsam("report", "--out", str(out), "--interval", "5s", env=env))
        IMAGES.mkdir(parents=True, exist_ok=True)
        for png in sorted(out.glob("*.png")):
            shutil.copy(png, IMAGES / png.name)
            print(f"{IMAGES / png.name}: {png.stat().st_size // 1024} KB")
        shutil.copy(out / "summary.txt", IMAGES / "summary.txt")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
