"""`make test`'s `TEST_WORKERS` reaches pytest: test files spread over that many xdist workers, or one process."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def pytest_command(*variables: str) -> str:
    shown = subprocess.run(["make", "-n", "-s", "test", *variables], cwd=ROOT, capture_output=True, text=True,
                           check=True, timeout=60)  # fmt: skip
    return next(line for line in shown.stdout.splitlines() if " -m pytest " in line)


def test_test_workers_reach_pytest() -> None:
    assert " -n 2 --dist loadfile" in pytest_command()
    assert " -n 3 --dist loadfile" in pytest_command("TEST_WORKERS=3")
    assert " -n " not in pytest_command("TEST_WORKERS=1")
