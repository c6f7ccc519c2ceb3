"""Fixtures for running the nightly DAG on Airflow's real components: homes, kept output, Postgres and Redis.

Services come from the environment (`tests/services.py`: POSTGRES_HOST, POSTGRES_PORT, POSTGRES_USER, POSTGRES_PASSWORD, REDIS_HOST,
REDIS_PORT; defaults 127.0.0.1:5432 user postgres, 127.0.0.1:6379). Each test gets a database and a broker key
prefix of its own and removes them afterwards. Logs and screenshots go to `artifacts/test-output/`.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from tests.e2e.conftest import PROJECT_ROOT, SYNTHETIC_DS, serving_tier
from tests.services import postgres_database, redis_address

TEST_OUTPUT = PROJECT_ROOT / "artifacts" / "test-output"
DAG_ID = "deepfm_nightly"
LOGICAL_DATE = f"{SYNTHETIC_DS}T00:00:00Z"
RUN_TIMEOUT_S = 15 * 60
TASKS = {
    "features.ingest", "features.update_feature_store", "features.check_skew",
    "training.build_training_set", "training.validate",
    "training.train", "release.bless", "release.push", "release.verify_serving",
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
def project_home(tmp_path: Path) -> Iterator[Path]:
    """A fresh project home: its own Feast repo config and a serving tier; artifacts, models and Airflow home
    appear under it."""
    from feature_repo.store import write_config

    write_config(tmp_path / "feature_repo")
    with serving_tier(tmp_path):
        yield tmp_path


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """SQLAlchemy URL of a fresh database `deepfm_airflow_test_<random>`, dropped afterwards."""
    with postgres_database("deepfm_airflow_test") as url:
        yield url


@pytest.fixture
def redis_broker() -> Iterator[tuple[str, str]]:
    """(broker URL, key prefix) on a Redis database of this test's own; its keys are deleted afterwards.

    The database number is REDIS_DB if set, else a random one of 1-15 holding no keys; the key prefix keeps the
    test apart from anything else that picks the same database.
    """
    import redis

    host, port = redis_address()
    if "REDIS_DB" in os.environ:
        db = int(os.environ["REDIS_DB"])
    else:
        empty = [n for n in range(1, 16) if redis.Redis(host=host, port=port, db=n).dbsize() == 0]
        db = secrets.choice(empty or list(range(1, 16)))
    prefix = f"deepfm-airflow-test-{secrets.token_hex(4)}:"
    client = redis.Redis(host=host, port=port, db=db)
    try:
        yield f"redis://{host}:{port}/{db}", prefix
    finally:
        for key in client.scan_iter(match=f"{prefix}*", count=1000):
            client.delete(key)
        client.close()
