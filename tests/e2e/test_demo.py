"""`make demo` on a team's own tables (`DEEPFM_SOURCE=parquet`): the run, then the list; a failed run says why.

The demo is run as `make demo` runs it (`python -m dags.ops.demo`): its own serving tier, Airflow's scheduler
and REST API on the home, a real DagRun.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.features import RATING
from deepfm_model.synthetic import EVENTS_FILE
from tests.e2e.conftest import PROJECT_ROOT, SYNTHETIC_DS, airflow_env, generate_source

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TOP_K = 5


def run_demo(home: Path) -> subprocess.CompletedProcess:
    from feature_repo.store import write_config

    write_config(home / "feature_repo")
    env = {key: value for key, value in airflow_env(home).items() if key != "DEEPFM_SERVING_ADDRESSES"}
    command = [sys.executable, "-m", "dags.ops.demo", "--ds", SYNTHETIC_DS, "--user", "1",
               "--top-k", str(TOP_K), "--airflow-home", str(home / "airflow")]  # fmt: skip
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)


def test_demo_on_a_parquet_source_prints_the_list(tmp_path: Path) -> None:
    generate_source(tmp_path)
    result = run_demo(tmp_path)
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"recommend('1', {TOP_K})" in result.stdout, result.stdout
    listed = re.findall(r"^\s*\d+\. (\d\.\d{3})  Synthetic Movie \d+ \(\d{4}\)$", result.stdout, re.MULTILINE)
    assert len(listed) == TOP_K, result.stdout  # each with the title and year read from the source's movies table
    assert [float(score) for score in listed] == sorted((float(score) for score in listed), reverse=True)


def test_a_failed_demo_run_prints_the_whole_reason(tmp_path: Path) -> None:
    folder = generate_source(tmp_path)
    events = pd.read_parquet(folder / EVENTS_FILE)
    events.drop(columns=[RATING]).to_parquet(folder / EVENTS_FILE, index=False)
    result = run_demo(tmp_path)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    # The failure line as the task log keeps it, every line of the reason: the second names the missing column.
    reason = output[output.index(f"deepfm_nightly features.ingest failed for {SYNTHETIC_DS}: ") :]
    assert "The raw source failed 1 check(s); nothing was written:" in reason.splitlines()[0], reason[:2000]
    assert RATING in reason.splitlines()[1], reason[:2000]
    assert not (tmp_path / "models" / "deepfm" / "1").exists()
