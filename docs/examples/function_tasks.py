"""The functions docs/examples/function_app.py runs as Balsam jobs (docs/functions.md).

Plain Python: nothing here knows of Balsam. A job's process imports this module by name
(``function_tasks``), so its directory is on the jobs' ``PYTHONPATH``.
"""

from __future__ import annotations


def simulate(n: int, steps: int = 10) -> dict[str, int]:
    """A stand-in for a simulation: one run of size ``n``."""
    if n <= 0:
        raise ValueError(f"n must be positive, got {n}")
    return {"n": n, "energy": n * n * steps}


def summarize(results: list[dict[str, int]]) -> int:
    """The total energy of the runs."""
    return sum(result["energy"] for result in results)
