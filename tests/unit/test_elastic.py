"""The elastic queue's decisions (balsam.site.elastic.plan), on plain data."""

from __future__ import annotations

import math

from balsam.platform.schedulers.base import BackfillWindow
from balsam.platform.schedulers.commands import safety_margin_minutes
from balsam.site.elastic import (
    DEFAULT_SLACK_MINUTES,
    Launcher,
    PolicyInput,
    Queue,
    Shape,
    launcher_minutes_for,
    plan,
)

DEBUG = Queue("debug", min_nodes=1, max_nodes=8, max_wall_time_minutes=60, max_queued_jobs=2)
PROD = Queue("prod", min_nodes=16, max_nodes=128, max_wall_time_minutes=720, max_queued_jobs=3)


def given(*backlog: Shape, launchers: list[Launcher] | None = None, **kw: object) -> PolicyInput:
    values: dict[str, object] = {
        "backlog": list(backlog),
        "launchers": launchers or [],
        "queues": [DEBUG, PROD],
        "wall_time_minutes": 30.0,
    } | kw
    return PolicyInput(**values)  # type: ignore[arg-type]


def test_packed_jobs_weigh_a_share_of_a_node_and_one_launcher_covers_them() -> None:
    decided = plan(given(Shape(1, 4, 10, 10)))  # ten jobs, four per node: 2.5 nodes
    [submit] = decided.submit
    assert (submit.queue, submit.num_nodes, submit.wall_time_minutes) == ("debug", 3, 30.0)
    assert "2.5 node(s) of backlog" in submit.reason
    assert decided.withdraw == [] and decided.unrunnable == []


def test_queued_and_running_launchers_cover_the_backlog_and_nothing_more_is_submitted() -> None:
    launchers = [
        Launcher(1, "debug", 2, 30),
        Launcher(2, "debug", 1, 30, running=True, started=True),
    ]
    assert plan(given(Shape(1, 1, 10, 3), launchers=launchers)).submit == []


def test_a_backlog_larger_than_every_launcher_gets_the_difference() -> None:
    launchers = [Launcher(1, "debug", 4, 30, running=True, started=True)]
    [submit] = plan(given(Shape(1, 1, 10, 7), launchers=launchers)).submit
    assert submit.num_nodes == 3


def test_a_big_backlog_goes_to_the_first_queue_whose_minimum_it_reaches() -> None:
    decided = plan(given(Shape(1, 1, 10, 40)))
    # debug is preferred (listed first) up to its two queued jobs; prod takes the rest.
    assert [(s.queue, s.num_nodes) for s in decided.submit] == [
        ("debug", 8),
        ("debug", 8),
        ("prod", 24),
    ]


def test_max_queued_jobs_bounds_submissions_per_queue() -> None:
    decided = plan(given(Shape(1, 1, 10, 1000)))
    assert [s.queue for s in decided.submit] == ["debug", "debug", "prod", "prod", "prod"]
    assert [s.num_nodes for s in decided.submit] == [8, 8, 128, 128, 128]


def test_a_queue_backing_off_is_not_used() -> None:
    decided = plan(given(Shape(1, 1, 10, 4), blocked={"debug": "refused 1 minute ago"}))
    # prod's minimum is 16 nodes; still the only way to run the jobs.
    assert [(s.queue, s.num_nodes) for s in decided.submit] == [("prod", 16)]


def test_a_launcher_is_as_wide_and_as_long_as_the_largest_job_needs() -> None:
    [submit] = plan(given(Shape(6, 1, 50, 1))).submit
    assert submit.num_nodes == 6
    assert submit.wall_time_minutes == launcher_minutes_for(
        50, safety_margin_minutes, DEFAULT_SLACK_MINUTES
    )
    usable = submit.wall_time_minutes - safety_margin_minutes(submit.wall_time_minutes)
    assert usable >= 50 + DEFAULT_SLACK_MINUTES
    assert submit.wall_time_minutes <= 60


def test_jobs_no_queue_can_run_are_reported_with_the_reason_and_not_asked_for() -> None:
    decided = plan(given(Shape(200, 1, 10, 2), Shape(4, 1, 800, 1), Shape(1, 1, 10, 1)))
    reasons = {u.shape.num_nodes: u.reason for u in decided.unrunnable}
    assert "needs 200 node(s); the largest queue (prod) takes 128" in reasons[200]
    assert "needs 800 minutes" in reasons[4] and "prod allows 720" in reasons[4]
    [submit] = decided.submit
    assert (submit.queue, submit.num_nodes) == ("debug", 1)


def test_with_no_backlog_every_queued_launcher_is_withdrawn_and_running_ones_stay() -> None:
    launchers = [
        Launcher(1, "debug", 2, 30),
        Launcher(2, "prod", 16, 30),
        Launcher(3, "debug", 2, 30, running=True, started=True),
    ]
    decided = plan(given(launchers=launchers))
    assert sorted(w.batch_id for w in decided.withdraw) == [1, 2]
    assert decided.submit == []


def test_only_the_newest_launchers_the_backlog_does_not_need_are_withdrawn() -> None:
    launchers = [Launcher(1, "debug", 4, 30), Launcher(2, "debug", 4, 30)]
    decided = plan(given(Shape(1, 1, 10, 3), launchers=launchers))
    assert [w.batch_id for w in decided.withdraw] == [2]
    assert "covered by 4 without it" in decided.withdraw[0].reason


def test_jobs_waiting_for_a_postprocess_get_one_small_launcher_when_none_exists() -> None:
    [submit] = plan(given(processing_waiting=3)).submit
    assert (submit.queue, submit.num_nodes) == ("debug", 1)
    kept = plan(given(processing_waiting=3, launchers=[Launcher(1, "debug", 1, 30)]))
    assert kept.submit == [] and kept.withdraw == []


def test_a_backfill_window_that_fits_is_used_first_and_sized_to_it() -> None:
    window = BackfillWindow("prod", 20, 45)
    decided = plan(given(Shape(1, 1, 10, 40), backfill={"prod": [window]}))
    first = decided.submit[0]
    assert (first.queue, first.num_nodes) == ("prod", 20)
    assert first.wall_time_minutes <= 45 and "backfill window" in first.reason


def test_a_backfill_window_too_short_for_the_jobs_is_not_used() -> None:
    decided = plan(given(Shape(1, 1, 50, 40), backfill={"debug": [BackfillWindow("debug", 8, 20)]}))
    assert all("backfill" not in s.reason for s in decided.submit)


def test_no_queue_means_every_job_is_reported() -> None:
    decided = plan(given(Shape(1, 1, 10, 2), queues=[]))
    assert decided.submit == [] and "no queue" in decided.unrunnable[0].reason


def test_launcher_minutes_leave_the_job_its_time_after_the_margin() -> None:
    for minutes in (0.5, 1, 5, 30, 59, 120, 600):
        wall = launcher_minutes_for(minutes, safety_margin_minutes)
        assert wall - safety_margin_minutes(wall) >= minutes - 1e-9
        assert wall - safety_margin_minutes(wall) <= minutes + 0.05
    assert launcher_minutes_for(0, safety_margin_minutes) == 0.0
    assert math.isfinite(launcher_minutes_for(1e5, safety_margin_minutes))


def test_a_job_longer_than_the_service_wall_time_gets_a_launcher_with_room_to_claim_it() -> None:
    """The launcher loses its start-up and kill grace too: 120-minute jobs need more than
    120 minutes plus the margin, or they are never claimed (and resubmitted for ever)."""
    decided = plan(given(Shape(1, 4, 120, 7), queues=[PROD]))
    [submit] = decided.submit
    usable = submit.wall_time_minutes - safety_margin_minutes(submit.wall_time_minutes)
    assert usable >= 120 + DEFAULT_SLACK_MINUTES


def test_no_launcher_is_asked_of_a_queue_that_cannot_run_the_jobs_waiting() -> None:
    """prod is full; debug's 8 nodes and 60 minutes run none of the jobs: nothing more."""
    full = [Launcher(i, "prod", 1, 720) for i in range(1, 4)]
    for shape in (Shape(16, 1, 10, 3), Shape(2, 1, 90, 4)):
        assert plan(given(shape, launchers=full)).submit == []


def test_a_sliver_of_backlog_beside_a_covered_wide_job_gets_a_small_launcher() -> None:
    launchers = [Launcher(1, "prod", 16, 60)]
    decided = plan(given(Shape(16, 1, 10, 1), Shape(1, 4, 10, 1), launchers=launchers))
    [submit] = decided.submit
    assert (submit.queue, submit.num_nodes) == ("debug", 1)


def test_jobs_longer_than_every_launcher_get_a_launcher_though_nodes_are_plenty() -> None:
    launchers = [Launcher(1, "prod", 16, 60)]
    decided = plan(given(Shape(1, 1, 120, 10), launchers=launchers))
    [submit] = decided.submit
    assert submit.queue == "prod"
    assert submit.wall_time_minutes >= launcher_minutes_for(
        120, safety_margin_minutes, DEFAULT_SLACK_MINUTES
    )
    assert "none of them is wide or long enough" in submit.reason


def test_a_queued_launcher_that_alone_runs_some_jobs_is_not_withdrawn() -> None:
    launchers = [Launcher(1, "prod", 16, 60, running=True), Launcher(2, "prod", 2, 300)]
    decided = plan(given(Shape(1, 1, 200, 1), launchers=launchers))
    assert decided.withdraw == []
