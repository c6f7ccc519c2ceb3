"""`make test`'s `TEST_WORKERS` reaches pytest: test files spread over that many xdist workers, or one process."""

from __future__ import annotations

import subprocess
import sys
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


def test_files_that_run_the_stack_are_handed_out_first() -> None:
    assert "--no-loadscope-reorder" in pytest_command()  # xdist keeps the collection order below
    fast, trains, stack = "tests/model/test_config.py", "tests/model/test_planted_truth.py", "tests/e2e/test_demo.py"
    shown = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", fast, trains, stack], cwd=ROOT,
                           capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    files = [line.split("::")[0] for line in shown.stdout.splitlines() if "::" in line]
    assert list(dict.fromkeys(files)) == [stack, trains, fast], files
