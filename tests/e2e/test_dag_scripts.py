"""Balsam's ``dag`` module: in this process, and in a real job script run as a launcher would."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from balsam.api import close_default_backend, use_backend
from balsam.backends.local import LocalBackend
from balsam.config import Site
from balsam.core.models import ApplicationDefinition, BalsamJob
from balsam.domain.states import JobState
from balsam.errors import ConfigError, DependencyError, NotFound
from balsam.launcher import dag


@pytest.fixture
def api(backend: LocalBackend) -> Iterator[LocalBackend]:
    """The test's backend, injected into the API, with two apps."""
    with use_backend(backend):
        ApplicationDefinition(name="SayHello", executable="echo hello,").save()
        ApplicationDefinition(name="Analyze", executable="python analyze.py").save()
        yield backend


@pytest.fixture(autouse=True)
def _close_default() -> Iterator[None]:
    yield
    close_default_backend()


def run_as_job(script: str, site: Site, job_id: str, tmp_path: Path) -> str:
    """Run ``script`` in a fresh Python with the environment a launcher gives a job."""
    path = tmp_path / "job_script.py"
    path.write_text(textwrap.dedent(script))
    env = {**os.environ, "BALSAM_DB_PATH": str(site.path), "BALSAM_JOB_ID": job_id}
    done = subprocess.run(
        [sys.executable, str(path)],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_outside_a_job_the_current_job_is_none(api: LocalBackend) -> None:
    assert dag.JOB_ID is None and dag.current_job is None
    assert dag.parents is None and dag.children is None
    with pytest.raises(ConfigError, match="BALSAM_JOB_ID is not set"):
        dag.spawn_child(name="c", application="SayHello")
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        _ = dag.nothing


def test_add_job_and_add_dependency(api: LocalBackend) -> None:
    a = dag.add_job(name="a", workflow="w", application="SayHello", args="a")
    b = dag.add_job(name="b", workflow="w", application="SayHello")
    c = dag.add_job(name="c", workflow="w", application="SayHello", parents=[a])
    assert a.pk is not None and a.state == JobState.PREPROCESSED
    assert c.state == JobState.AWAITING_PARENTS and c.parents == [a.job_id]
    dag.add_dependency(b, c)  # jobs
    dag.add_dependency(a.job_id or "", b.job_id or "")  # full ids
    assert {p.name for p in c.get_parents()} == {"a", "b"}
    assert BalsamJob.objects.get(name="b").state == JobState.AWAITING_PARENTS
    with pytest.raises(DependencyError, match="cycle"):
        dag.add_dependency((c.job_id or "")[:12], a)  # an id prefix works too
    with pytest.raises(DependencyError, match="itself"):
        dag.add_dependency(a, a)
    with pytest.raises(NotFound):
        dag.add_dependency("ffffffff-ffff-ffff-ffff-ffffffffffff", a)
    with pytest.raises(NotFound, match="unknown application"):
        dag.add_job(name="d", application="Missing")


def test_kill_one_job_or_a_subtree(api: LocalBackend) -> None:
    root = dag.add_job(name="root", application="SayHello")
    mid = dag.add_job(name="mid", application="SayHello", parents=[root])
    leaf = dag.add_job(name="leaf", application="SayHello", parents=[mid])
    other = dag.add_job(name="other", application="SayHello")
    killed = dag.kill(root, recursive=True)
    assert set(killed) == {root.job_id, mid.job_id, leaf.job_id}
    states = dict(BalsamJob.objects.values_list("name", "state"))
    assert states == {
        "root": "USER_KILLED",
        "mid": "USER_KILLED",
        "leaf": "USER_KILLED",
        "other": "PREPROCESSED",
    }
    child = dag.add_job(name="child", application="SayHello", parents=[other])
    assert dag.kill(other.job_id or "", recursive=False) == [other.job_id]
    # Not recursive: the child is not killed, but a killed parent fails it.
    child.refresh_from_db()
    assert child.state == JobState.FAILED
    # Recursive by default, as in Balsam 0.5; the object passed is brought up to date.
    top = dag.add_job(name="top", application="SayHello")
    below = dag.add_job(name="below", application="SayHello", parents=[top])
    assert set(dag.kill(top)) == {top.job_id, below.job_id}
    assert top.state == JobState.USER_KILLED


def test_spawn_child_of_the_current_job(api: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    parent = dag.add_job(
        name="parent", workflow="sim", application="SayHello", num_nodes=2, data={"x": 1}
    )
    other = dag.add_job(name="other", workflow="sim", application="SayHello")
    monkeypatch.setenv("BALSAM_JOB_ID", parent.job_id or "")
    assert parent.job_id == dag.JOB_ID
    current = dag.current_job
    assert current is not None and current.name == "parent" and current.num_nodes == 2
    plain = dag.spawn_child(name="plain", application="Analyze", args="--fast")
    assert (plain.workflow, plain.num_nodes, plain.args) == ("sim", 1, "--fast")
    assert plain.parents == [parent.job_id] and plain.state == JobState.AWAITING_PARENTS
    cloned = dag.spawn_child(clone=True, name="cloned", parents=[other])
    assert (cloned.workflow, cloned.application, cloned.num_nodes) == ("sim", "SayHello", 2)
    assert cloned.data == {"x": 1} and set(cloned.parents) == {parent.job_id, other.job_id}
    elsewhere = dag.spawn_child(name="elsewhere", workflow="post", application="Analyze")
    assert elsewhere.workflow == "post"
    children, parents = dag.children, dag.parents
    assert children is not None and parents is not None
    assert {c.name for c in children} == {"plain", "cloned", "elsewhere"}
    assert list(parents) == []
    monkeypatch.setenv("BALSAM_JOB_ID", plain.job_id or "")
    assert [p.name for p in dag.parents or []] == ["parent"]


def test_a_job_id_that_names_no_job_is_an_error(
    api: LocalBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BALSAM_JOB_ID", "ffffffff-ffff-ffff-ffff-ffffffffffff")
    with pytest.raises(NotFound, match=r"BALSAM_JOB_ID=ffffffff.* names no job"):
        _ = dag.current_job


def test_importing_dag_opens_no_database(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "from balsam.launcher import dag\n"
        "assert 'sqlalchemy' not in sys.modules, 'dag pulled in the SQL engine'\n"
        "print(dag.JOB_ID)\n"
    )
    env = {**os.environ, "BALSAM_DB_PATH": str(tmp_path / "nowhere"), "BALSAM_JOB_ID": "abc"}
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "abc"


def test_a_job_script_spawns_a_child_in_a_real_process(site: Site, tmp_path: Path) -> None:
    # The launcher runs a job with BALSAM_DB_PATH and BALSAM_JOB_ID set; its script uses dag.
    ApplicationDefinition(name="SayHello", executable="echo hello,").save()
    ApplicationDefinition(name="Analyze", executable="python analyze.py").save()
    parent = BalsamJob(name="parent", workflow="test", application="SayHello")
    parent.save()
    out = run_as_job(
        """
        from balsam.launcher import dag
        print(dag.JOB_ID, dag.current_job.name)
        child = dag.spawn_child(name="c", application="Analyze", args="--input out.dat")
        print(child.job_id)
        """,
        site,
        parent.job_id or "",
        tmp_path,
    )
    job_id_line, child_id = out.split()[:2], out.split()[2]
    assert job_id_line == [parent.job_id, "parent"]
    child = BalsamJob.objects.get(name="c")
    assert child.job_id == child_id
    assert (child.workflow, child.application, child.args) == ("test", "Analyze", "--input out.dat")
    assert [p.name for p in child.get_parents()] == ["parent"]
    assert [c.name for c in parent.get_children()] == ["c"]
    assert child.state == JobState.AWAITING_PARENTS
    assert Path(child.working_directory).parent == site.path / "data" / "test"


def test_a_job_script_can_kill_its_own_subtree(site: Site, tmp_path: Path) -> None:
    ApplicationDefinition(name="SayHello", executable="echo hello,").save()
    parent = BalsamJob(name="parent", workflow="test", application="SayHello")
    parent.save()
    child = BalsamJob(name="child", workflow="test", application="SayHello", parents=[parent])
    child.save()
    run_as_job(
        """
        from balsam.launcher import dag
        assert [c.name for c in dag.children] == ["child"]
        dag.kill(dag.current_job, recursive=True)
        """,
        site,
        parent.job_id or "",
        tmp_path,
    )
    assert set(BalsamJob.objects.values_list("state", flat=True)) == {JobState.USER_KILLED}
