"""The elastic-queue simulator (bench/elastic_sim.py) on a tiny campaign: what must hold."""

from __future__ import annotations

import importlib
import random
import sys
from pathlib import Path
from typing import Any

import pytest

# The simulator is a benchmark script, not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
sim = importlib.import_module("elastic_sim")

# Every job's wall time fits the service's launchers (the longest estimate is 240 minutes):
# see test_a_job_longer_than_the_service_wall_time_finishes for what happens otherwise.
TINY = sim.Scenario(
    machine=sim.MachineModel(nodes=64),
    campaign=sim.CampaignModel(jobs=200, bursts=3, span_minutes=120.0, under_share=0.0),
    wall_time=300.0,
    horizon=2 * 1440.0,
)


def figures(seed: int) -> list[Any]:
    """Elastic without and with backfill, then a static 1x16, on one seeded campaign."""
    _, rows = sim.compare(TINY, seed, [False, True], [(1, 16)])
    return list(rows)


def test_every_strategy_finishes_every_job_within_what_it_reserved() -> None:
    for row in figures(3):
        assert row.finished == 200, row
        assert row.failed == 0
        assert row.left_queued == 0, f"{row.label} left a launcher queued"
        assert 0 < row.busy <= row.reserved + 1e-6
        assert row.submitted >= 1
        assert row.stuck == []
        assert row.complete


def test_the_busy_node_hours_are_the_campaign_work_when_nothing_is_cut() -> None:
    work, rows = sim.compare(TINY, 3, [False], [(1, 16)])
    for row in rows:
        assert row.timeouts == 0
        assert row.busy == pytest.approx(work.work())


def test_the_same_seed_gives_the_same_figures() -> None:
    assert figures(5) == figures(5)
    assert figures(5) != figures(6)


def test_a_launcher_packs_jobs_onto_shared_nodes() -> None:
    pool = sim.NodePool(2)
    held = [pool.take(1, 4) for _ in range(4)]
    assert {node for (node,) in held} == {held[0][0]}
    assert pool.can_take(2, 1) is False and pool.can_take(1, 1) is True
    for one in held:
        pool.give(one, 4)
    assert pool.can_take(2, 1)


def test_a_job_longer_than_the_service_wall_time_finishes() -> None:
    """A launcher asked for a long job leaves it room after its start-up and kill grace."""
    work = sim.Workload(size=[(1, 1, 120.0)], runtime=[50.0], bursts=[(0.0, range(1))])
    scenario = sim.Scenario(machine=sim.MachineModel(nodes=64), horizon=1440.0)
    bg = sim.Background(scenario.machine, random.Random("bg"), scenario.horizon)
    row = sim.run_elastic(scenario, work, bg, False)
    assert row.finished == 1
