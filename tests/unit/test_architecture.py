"""Layer rules and the public surface."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import balsam

ROOT = Path(__file__).resolve().parents[2]


def test_import_layers_hold() -> None:
    """cli/api/launcher/platform never import the store; domain imports nothing of ours."""
    lint = Path(sys.executable).parent / "lint-imports"
    result = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_public_names() -> None:
    assert sorted(balsam.__all__) == ["BalsamError", "JobState", "__version__", "setup"]
    balsam.setup()  # Balsam 0.5 scripts call it first: a no-op here
    for name in balsam.__all__:
        assert hasattr(balsam, name)


def test_api_public_names() -> None:
    import balsam.api

    assert sorted(balsam.api.__all__) == [
        "ALL_COMPLETED",
        "App",
        "AppQuerySet",
        "BackendScope",
        "CampaignReport",
        "DoneAndNotDone",
        "FIRST_COMPLETED",
        "Job",
        "JobQuerySet",
        "UnknownField",
        "campaign_report",
        "close_default_backend",
        "get_backend",
        "get_site",
        "use_backend",
    ]
    for name in balsam.api.__all__:
        assert hasattr(balsam.api, name)
    assert balsam.api.ALL_COMPLETED == "ALL_COMPLETED"  # concurrent.futures' spellings
    assert balsam.api.FIRST_COMPLETED == "FIRST_COMPLETED"
