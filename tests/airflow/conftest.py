"""Fixtures for running the nightly DAG on Airflow's real components: homes and kept output.

Logs and screenshots go to `artifacts/test-output/`. The CeleryExecutor shape (Postgres, Redis, a `gpu` worker)
runs in the deploy test, `tests/deploy/`, as docker/compose.yaml wires it.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from serving.server_process import RunningServer
from tests.e2e.conftest import PROJECT_ROOT, SYNTHETIC_DS, serving_tier

TEST_OUTPUT = PROJECT_ROOT / "artifacts" / "test-output"
DAG_ID = "deepfm_nightly"
LOGICAL_DATE = f"{SYNTHETIC_DS}T00:00:00Z"
RUN_TIMEOUT_S = 15 * 60
TASKS = {
    "features.ingest", "features.update_feature_store", "features.check_skew",
    "training.build_training_set", "training.validate",
    "training.train", "training.evaluate", "release.bless", "release.push", "release.verify_serving",
}  # fmt: skip


def assert_runnable_on_synthetic_data(stack) -> None:
    """The scheduler creates no task instances for a logical date before the DAG's `start_date`: say so plainly."""
    start_date = stack.request("GET", f"/api/v2/dags/{DAG_ID}/details").json()["start_date"]
    assert start_date is None or datetime.fromisoformat(start_date) <= datetime.fromisoformat(LOGICAL_DATE), (
        f"{DAG_ID}'s start_date {start_date} is after the synthetic data's logical date {LOGICAL_DATE}: a run "
        "triggered for it would get no task instances (DagRun.verify_integrity skips tasks not yet started)"
    )


@pytest.fixture
def output_dir(request: pytest.FixtureRequest) -> Path:
    """`artifacts/test-output/<test name>/`, emptied first and kept afterwards."""
    path = TEST_OUTPUT / request.node.name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@pytest.fixture
def project_home(tmp_path: Path) -> Path:
    """A fresh project home with its own Feast repo config; artifacts, models and Airflow home appear under it."""
    from feature_repo.store import write_config

    write_config(tmp_path / "feature_repo")
    return tmp_path


@pytest.fixture
def serving(project_home: Path) -> Iterator[list[RunningServer]]:
    """The home's serving tier (one replica); started before Airflow, whose processes read its address."""
    with serving_tier(project_home) as servers:
        yield servers
