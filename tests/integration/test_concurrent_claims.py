"""Several processes claiming from one database at once never get the same job."""

from __future__ import annotations

import json
import subprocess
import sys

from balsam.backends.local import LocalBackend
from balsam.schemas import AppCreate, JobCreate, JobQuery

CLAIMER = """
import json, os, sys
from balsam.backends.local import LocalBackend
from balsam.schemas import ClaimRequest
backend = LocalBackend.from_url(sys.argv[1])
sess = backend.open_session("claimer", "host", os.getpid())
got = []
while batch := backend.claim_jobs(sess.id, ClaimRequest(limit=7)):
    got += [j.job_id for j in batch]
print(json.dumps(got))
backend.close()
"""


def test_parallel_claimers_split_the_jobs(backend: LocalBackend, db_url: str) -> None:
    backend.create_app(AppCreate(name="A", executable="true"))
    backend.create_jobs([JobCreate(name=f"j{i}", application="A") for i in range(300)])
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIMER, db_url], stdout=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    results = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert all(p.returncode == 0 for p in procs)
    claimed = [jid for r in results for jid in r]
    assert len(claimed) == len(set(claimed)) == 300
    assert {j.job_id for j in backend.query_jobs(JobQuery())} == set(claimed)
