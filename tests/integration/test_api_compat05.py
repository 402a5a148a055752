"""Balsam 0.5's ``BalsamJob`` and ``ApplicationDefinition`` surface, on SQLite and PostgreSQL.

What 0.5 user scripts call beyond the fields: the helpers on history, app and working
directory, ``save(update_fields=...)``, a bare ``BalsamJob()`` filled in before its save,
``ApplicationDefinition.objects.get_or_create(name=...)`` followed by the executable, and
the ``dag`` functions that build workflows (``clone``, ``wf_from_template``, ``add_app``).
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from balsam.api import close_default_backend, use_backend
from balsam.api.lookups import UnknownField
from balsam.backends.base import Backend
from balsam.config import Site
from balsam.core.models import ApplicationDefinition, BalsamJob
from balsam.domain.states import JobState
from balsam.errors import InvalidTransition, ValidationError
from balsam.launcher import dag
from balsam.schemas.jobs import StateUpdate
from balsam.schemas.sessions import ClaimRequest


@pytest.fixture
def api(site: Site, backend_of: Backend) -> Iterator[Backend]:
    with use_backend(backend_of, site=site):
        app, created = ApplicationDefinition.objects.get_or_create(name="Sim")
        assert created and app.pk is None, "unsaved until it has an executable"
        app.executable = "~/bin/sim --fast"
        app.save()
        yield backend_of
    close_default_backend()


def test_get_or_create_then_the_executable_registers_the_app(api: Backend) -> None:
    stored = ApplicationDefinition.objects.get(name="Sim")
    assert stored.executable == "~/bin/sim --fast"
    again, created = ApplicationDefinition.objects.get_or_create(name="Sim")
    assert not created and again.pk == stored.pk


def test_a_bare_job_filled_in_then_saved(api: Backend) -> None:
    job = BalsamJob(state="CREATED")
    job.name, job.workflow, job.application = "bare", "w", "Sim"
    job.num_nodes, job.ranks_per_node, job.args = 2, 4, "-n 8 ~/in.dat"
    job.save()
    assert job.state is JobState.PREPROCESSED
    assert job.num_ranks == 8
    home = str(Path.home())
    assert job.app_cmd == f"{home}/bin/sim --fast -n 8 {home}/in.dat"
    with pytest.raises(InvalidTransition):
        BalsamJob(name="x", application="Sim", state="FAILED").save()


def test_history_helpers_answer_as_0_5_did(api: Backend) -> None:
    job = dag.add_job(name="h", workflow="w", application="Sim")
    session = api.open_session("t", "host", 1)
    api.claim_jobs(session.id, ClaimRequest())
    api.record_updates(session.id, [StateUpdate(job_id=job.job_id or "", state=JobState.RUNNING)])
    api.record_updates(session.id, [StateUpdate(job_id=job.job_id or "", state=JobState.RUN_DONE)])
    lines = job.state_history.splitlines()
    assert lines[0].startswith("[") and lines[0].endswith("CREATED] created")
    assert job.get_recent_state_str().endswith("JOB_FINISHED]")
    stamp = lines[0][1:].split(" CREATED")[0]
    assert datetime.strptime(stamp, "%m-%d-%Y %H:%M:%S.%f")
    times = job.get_state_times()
    assert set(times) >= {"CREATED", "RUNNING", "RUN_DONE", "JOB_FINISHED"}
    assert all(t.tzinfo is None for t in times.values())
    runtime = job.runtime_seconds
    assert runtime is not None and 0 <= runtime == pytest.approx(
        (times["RUN_DONE"] - times["RUNNING"]).total_seconds()
    )
    fresh = dag.add_job(name="never_ran", workflow="w", application="Sim")
    assert fresh.runtime_seconds is None


def test_children_files_and_environment(api: Backend, site: Site) -> None:
    parent = dag.add_job(
        name="p", workflow="w", application="Sim", environ_vars={"A": "1"}, threads_per_rank=2
    )
    child = dag.add_job(name="c", workflow="w", application="Sim", parents=[parent])
    assert parent.get_child_by_name("c") == child
    with pytest.raises(ValueError, match="no child named 'x'"):
        parent.get_child_by_name("x")
    Path(parent.working_directory).mkdir(parents=True, exist_ok=True)
    (Path(parent.working_directory) / "result.txt").write_text("42\n")
    assert parent.read_file_in_workdir("result.txt") == "42\n"
    with pytest.raises(ValueError, match=r"missing\.txt not found in working directory"):
        parent.read_file_in_workdir("missing.txt")
    envs = child.get_envs(error=True)
    assert envs["BALSAM_JOB_ID"] == child.job_id and envs["BALSAM_JOB_ERROR"] == "TRUE"
    assert envs["BALSAM_PARENT_IDS"] == f'["{parent.job_id}"]'
    assert envs["BALSAM_DB_PATH"] == str(site.path)
    assert parent.get_envs()["A"] == "1" and parent.get_envs()["OMP_NUM_THREADS"] == "2"


def test_save_update_fields_writes_only_those(api: Backend) -> None:
    job = dag.add_job(name="u", workflow="w", application="Sim", args="old")
    job.args, job.num_nodes = "unsaved", 3
    job.save(update_fields=["num_nodes"])
    stored = BalsamJob.objects.get(pk=job.pk)
    assert (stored.args, stored.num_nodes) == ("old", 3)
    assert (job.args, job.num_nodes) == ("unsaved", 3), "the other edit stays on the object"
    job.state = "USER_KILLED"
    job.save(update_fields=["args"])
    assert BalsamJob.objects.get(pk=job.pk).state is JobState.PREPROCESSED
    job.save(update_fields=["state"])
    assert BalsamJob.objects.get(pk=job.pk).state is JobState.USER_KILLED
    with pytest.raises(UnknownField):
        job.save(update_fields=["colour"])


def test_a_user_may_reset_a_job_to_created_with_its_history_kept(api: Backend) -> None:
    parent = dag.add_job(name="p", workflow="w", application="Sim")
    child = dag.add_job(name="c", workflow="w", application="Sim", parents=[parent])
    dag.kill(parent, recursive=False)
    assert BalsamJob.objects.get(pk=child.pk).state is JobState.FAILED
    parent.update_state("CREATED", "start over")
    child.update_state("CREATED", "start over")
    assert parent.state is JobState.PREPROCESSED
    assert child.state is JobState.AWAITING_PARENTS
    assert [e.to_state for e in child.history()].count("CREATED") == 2
    with pytest.raises(InvalidTransition, match="RUNNING"):
        child.update_state("RUNNING")


def test_clone_add_app_and_a_workflow_from_a_template(api: Backend) -> None:
    dag.add_app("Post", "python post.py", description="after")
    assert {a.name for a in dag.get_apps()} == {"Sim", "Post"}
    assert ApplicationDefinition.objects.get(name="Post").description == "after"
    dag.add_app("Post", "python post2.py")
    assert ApplicationDefinition.objects.get(name="Post").executable == "python post2.py"
    with pytest.raises(ValidationError, match="no executable"):
        dag.add_app("Nope", "no-such-program-here", checkexe=True)
    first = dag.add_job(name="first", workflow="tpl", application="Sim", num_nodes=2)
    dag.add_job(name="second", workflow="tpl", application="Post", parents=[first])
    copy = dag.clone(first, name="copy")
    assert copy.pk is None and (copy.num_nodes, copy.workflow) == (2, "tpl")
    with pytest.raises(ValidationError, match="not job fields: colour"):
        dag.clone(first, colour="red")
    made = dag.wf_from_template("tpl", "run1", second={"args": "--fast"})
    jobs = {j.name: j for j in made}
    assert set(jobs) == {"first", "second"}
    assert jobs["second"].args == "--fast"
    assert jobs["second"].parents == [jobs["first"].job_id]
    with pytest.raises(ValidationError, match="has jobs already"):
        dag.wf_from_template("tpl", "run1")
    with pytest.raises(ValidationError, match="no jobs in workflow"):
        dag.wf_from_template("nothing", "run2")


def test_database_paths(api: Backend, site: Site, capsys: pytest.CaptureFixture[str]) -> None:
    assert dag.get_active_database() == str(site.path)
    assert "Active balsam database path" in capsys.readouterr().out
    assert dag.get_active_database(verbose=False) == str(site.path)
    assert str(site.path) in dag.get_database_paths(verbose=False)


def test_json_lookups_into_data_through_the_api(api: Backend) -> None:
    for name, n in (("a", 1), ("b", 5), ("c", 9)):
        dag.add_job(name=name, workflow="w", application="Sim", data={"n": n, "tag": name * 2})
    assert {j.name for j in BalsamJob.objects.filter(data__n__gt=2)} == {"b", "c"}
    assert BalsamJob.objects.get(data__tag="bb").name == "b"
    assert {j.name for j in BalsamJob.objects.exclude(data__n__lte=5)} == {"c"}
    with pytest.raises(ValidationError, match="compares numbers"):
        BalsamJob.objects.filter(data__n__gt="x").count()


def test_the_0_5_reports_over_a_campaign(api: Backend) -> None:
    from balsam.core.models import (
        error_report,
        process_job_times,
        throughput_report,
        utilization_report,
    )

    assert error_report() is None
    made = [dag.add_job(name=f"r{i}", workflow="w", application="Sim") for i in range(4)]
    session = api.open_session("t", "host", 1)
    api.claim_jobs(session.id, ClaimRequest())
    ends = [JobState.RUN_DONE, JobState.RUN_DONE, JobState.RUN_ERROR, JobState.RUN_DONE]
    for job, end in zip(made, ends, strict=True):
        job_id = job.job_id or ""
        api.record_updates(session.id, [StateUpdate(job_id=job_id, state=JobState.RUNNING)])
        api.record_updates(session.id, [StateUpdate(job_id=job_id, state=end)])
    times = process_job_times()
    assert len(times["RUNNING"]) == 4 and len(times["RUN_DONE"]) == 3
    assert len(process_job_times(BalsamJob.objects.filter(name="r0"))["RUNNING"]) == 1
    when, done = throughput_report()
    assert done[-1] == 3 and done == sorted(done) and when == sorted(when)
    when, running = utilization_report()
    assert running[-1] == 0 and max(running) == 1 and len(when) == len(running)
    report = error_report()
    assert report is not None
    edges, counts = report
    assert sum(counts) == 1 and len(edges) == len(counts) + 1


def test_user_workdir_and_coschedule_num_nodes(api: Backend, site: Site, tmp_path: Path) -> None:
    mine = tmp_path / "my_runs"
    mine.mkdir()
    job = BalsamJob(name="w", workflow="w", application="Sim", user_workdir=str(mine))
    job.coschedule_num_nodes = 4
    job.save()
    assert job.working_directory == str(mine) and job.user_workdir == str(mine)
    assert BalsamJob.objects.get(pk=job.pk).coschedule_num_nodes == 4
    plain = dag.add_job(name="p", workflow="w", application="Sim")
    assert plain.user_workdir == "" and plain.working_directory.startswith(str(site.path))
    with pytest.raises(ValidationError, match="fixed when the job is created"):
        job.user_workdir = "/elsewhere"
    with pytest.raises(ValidationError, match="absolute path"):
        BalsamJob(name="r", workflow="w", application="Sim", user_workdir="relative").save()


def test_more_of_0_5s_job_helpers_and_names(api: Backend) -> None:
    import balsam
    from balsam.core import models

    balsam.setup()
    ApplicationDefinition(
        name="Steps", executable="true", preprocess="echo pre", postprocess="echo post"
    ).save()
    parent = dag.add_job("parent", "w", "Steps", ranks_per_node=4, threads_per_rank=2)
    child = dag.add_job("child", "w", "Sim", parents=[parent])
    unsaved = dag.add_job("later", "w", "Sim", save=False)
    assert unsaved.pk is None and BalsamJob.objects.filter(name="later").count() == 0
    assert (parent.preprocess, parent.postprocess, parent.envscript) == (
        "echo pre",
        "echo post",
        None,
    )
    assert parent.get_application().name == "Steps"
    assert parent.required_num_cores == 8
    assert child.get_parents_by_id() == [parent.job_id]
    assert parent.get_children_by_id() == [child.job_id]
    assert BalsamJob.parse_envstring("A=1:B=x=y") == {"A": "1", "B": "x=y"}
    as_dict = parent.to_dict()
    assert as_dict["name"] == "parent" and as_dict["state"] == "STAGED_IN"
    assert BalsamJob.batch_update_state([parent, child.job_id], "USER_KILLED") == 2
    assert BalsamJob.objects.get(name="child").state is JobState.USER_KILLED
    other = dag.add_job("other", "w", "Sim")
    unsaved.save()
    dag.add_dependency(BalsamJob.objects.filter(name="other"), unsaved)
    assert unsaved.get_parents_by_id() == [other.job_id]
    with pytest.raises(ValidationError, match="needs one job"):
        dag.add_dependency(BalsamJob.objects.filter(workflow="w"), other)
    assert "JOB_FINISHED" in models.END_STATES and "RUN_DONE" in models.PROCESSABLE_STATES
    assert issubclass(models.InvalidStateError, ValidationError)


def test_set_parents_replaces_the_list_as_in_0_5(api: Backend) -> None:
    parent = dag.add_job(name="p", workflow="w", application="Sim")
    child = dag.add_job(name="c", workflow="w", application="Sim", parents=[parent])
    assert child.state is JobState.AWAITING_PARENTS
    child.set_parents([])
    assert child.parents == [] and child.state is JobState.PREPROCESSED


def test_values_and_distinct(api: Backend) -> None:
    dag.add_job(name="v1", workflow="w", application="Sim", num_nodes=2)
    rows = BalsamJob.objects.filter(name="v1").distinct().values("name", "num_nodes")
    assert rows == [{"name": "v1", "num_nodes": 2}]


def test_dag_submit_submits_a_launcher_as_submit_launch_does(api: Backend) -> None:
    from balsam.errors import SchedulerError

    launch_id = dag.submit(project="proj", queue="local", nodes=1, wall_minutes=1)
    (row,) = api.list_batch_jobs()
    assert (row.scheduler_id, row.project, row.queue, row.num_nodes) == (
        launch_id,
        "proj",
        "local",
        1,
    )
    with pytest.raises(SchedulerError, match="--nodes"):
        dag.submit(project="proj", queue="local", nodes=0)


def test_0_5_details_the_doc_review_found(api: Backend) -> None:
    from balsam.core import models

    assert models.PROCESSABLE_STATES == [
        "CREATED", "AWAITING_PARENTS", "READY", "STAGED_IN",
        "RUN_DONE", "POSTPROCESSED", "RUN_TIMEOUT", "RUN_ERROR",
    ]  # fmt: skip
    job = dag.add_job("k", "w", "Sim", coschedule_num_nodes=3)
    assert job.coschedule_num_nodes == 3 and job.to_dict()["working_directory"]
    killed = dag.add_job("killed", "w", "Sim")
    dag.kill(killed)
    moved = BalsamJob.batch_update_state([job, killed], "FAILED", message="given up by script")
    assert moved == 1
    assert BalsamJob.objects.get(name="killed").state is JobState.USER_KILLED
    last = BalsamJob.objects.get(name="k").history()[-1]
    assert (last.to_state, last.message) == ("FAILED", "given up by script")
    app, created = ApplicationDefinition.objects.get_or_create(
        name="Dflt", defaults={"executable": "echo x", "description": "d"}
    )
    assert created and app.pk is not None and app.description == "d"


def test_an_apps_cute_id(api: Backend) -> None:
    app = ApplicationDefinition.objects.get(name="Sim")
    assert app.cute_id == f"[Sim | {app.pk}]"


def test_0_5_history_text_helpers_read_the_history_text(api: Backend) -> None:
    from balsam.core import models

    job = dag.add_job(name="h", workflow="w", application="Sim")
    found = models.STATE_TIME_PATTERN.findall(job.state_history)
    assert [state for _, state in found][:2] == ["CREATED", "READY"]
    when = models.from_time_string(found[0][0])
    assert when == job.get_state_times()["CREATED"]
    line = models.history_line("FAILED", "by hand")
    assert models.STATE_TIME_PATTERN.match(line) and line.endswith("FAILED] by hand")
    models.validate_state("RUN_DONE")
    with pytest.raises(models.InvalidStateError, match="not a valid job state"):
        models.validate_state("run_done")
