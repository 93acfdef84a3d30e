"""The static gates: ruff (style, imports, likely bugs) over the package, the tests and the
benchmarks, and mypy (types) over the package.

Their settings are in pyproject.toml. The layering gate is tests/test_layers.py.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)


def test_ruff_finds_nothing() -> None:
    result = run("ruff", "check", "--no-cache", "replicate_magic", "tests", "bench")
    assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_finds_nothing() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
