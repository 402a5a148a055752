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
