"""Importing `feature_repo` turns typeguard's instrumentation of Feast off (its import cost, see the package's
docstring); Feast imported alone keeps it. Each case runs in a fresh interpreter, as a task process starts."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.e2e.conftest import PROJECT_ROOT

# A typechecked Feast class given a wrong type: typeguard's instrumentation raises TypeCheckError at the call.
WRONG_TYPE = """
import feast, typeguard
try:
    feast.Entity(name="user", join_keys=["user"], description=5)
except typeguard.TypeCheckError:
    print("checked")
else:
    print("unchecked")
"""


def run(code: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", code], cwd=PROJECT_ROOT, env=env,
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_feast_imported_by_the_stores_module_is_not_instrumented() -> None:
    assert run("import feature_repo.store" + WRONG_TYPE) == "unchecked"


def test_feast_imported_alone_keeps_typeguard_s_checks() -> None:
    assert run(WRONG_TYPE) == "checked"  # so the case above shows the switch, not a Feast without typeguard


def test_both_forms_of_the_decorator_leave_their_target_as_it_is() -> None:
    code = """
import feature_repo, typeguard
def f(x: int) -> int:
    return x
print(typeguard.typechecked(f) is f, typeguard.typechecked(forward_ref_policy=None)(f) is f, f("not an int"))
"""
    assert run(code) == "True True not an int"
