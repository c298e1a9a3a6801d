"""Without Chromium the playground's browser test is skipped on a laptop but fails in CI
(CI=true), so the only browser check of the playground cannot silently stop running."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import uldkit

TESTS = Path(__file__).parent


def test_a_missing_browser_fails_in_ci(tmp_path):
    # (Without CI=true the same run skips it, with the same reason: as on any laptop here.)
    env = {**os.environ, "CI": "true", "ULDKIT_CHROMIUM": str(tmp_path / "no-chromium"),
           "PYTHONPATH": str(Path(uldkit.__file__).parents[1])}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-rfs",
         str(TESTS / "test_playground.py")],
        capture_output=True, text=True, env=env, cwd=TESTS.parent, timeout=600)
    # The check fails the test at setup (pytest counts it an error): the run exits non-zero.
    assert "1 error" in done.stdout and done.returncode != 0, done.stdout[-2000:]
    assert "CI=true and the playground's browser test needs Chromium at " in done.stdout
    assert "no-chromium (apt-get install chromium)" in done.stdout
