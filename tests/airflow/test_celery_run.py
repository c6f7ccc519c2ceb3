"""The nightly DAG on the production shape: CeleryExecutor, Postgres metadata DB, Redis broker, two workers,
and the Feast online store on Redis (by configuration alone: `feature_store.yaml`).

One worker consumes the `default` queue, the other the `gpu` queue (on this host it trains on the CPU: the point
is the routing). The run must succeed with `train` on the gpu worker and every other task on the default worker,
as the task instances' `queue` and `hostname` fields report over the REST API.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dags.pipeline.airflow_stack import AirflowStack, CeleryWorker, StackConfig
from tests.airflow.conftest import (
    DAG_ID,
    LOGICAL_DATE,
    RUN_TIMEOUT_S,
    TASKS,
    assert_runnable_on_synthetic_data,
)
from tests.e2e.conftest import SYNTHETIC_DS, airflow_env

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(RUN_TIMEOUT_S + 600)]

DEFAULT_WORKER = CeleryWorker(name="default-worker", queues=("default",), concurrency=2)
GPU_WORKER = CeleryWorker(name="gpu-worker", queues=("gpu",), concurrency=1)
GPU_TASKS = {"training.train"}


def _seconds(start: str | None, end: str | None) -> float | None:
    if not (start and end):
        return None
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def placement_table(instances: list[dict]) -> str:
    rows = [("task", "queue", "hostname", "state", "seconds")]
    for ti in sorted(instances, key=lambda ti: ti["start_date"] or ""):
        seconds = _seconds(ti["start_date"], ti["end_date"])
        rows.append((ti["task_id"], ti["queue"], ti["hostname"], ti["state"], f"{seconds:.1f}" if seconds else "-"))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join(
        "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths, strict=False)) for row in rows
    )


@pytest.fixture
def redis_online_store(project_home: Path, redis_broker: tuple[str, str]) -> Iterator[tuple[Any, str]]:
    """Switch the run's Feast repo to the Redis online store, by configuration alone; its keys go afterwards."""
    import redis

    from feature_repo.store import write_config

    host, port = os.environ.get("REDIS_HOST", "127.0.0.1"), int(os.environ.get("REDIS_PORT", "6379"))
    project = f"deepfm_celery_{uuid.uuid4().hex[:8]}"
    write_config(
        project_home / "feature_repo",
        project=project,
        online_store={"type": "redis", "connection_string": f"{host}:{port}", "key_ttl_seconds": 3600},
    )
    client = redis.Redis(host=host, port=port)
    yield client, project
    for key in client.scan_iter(f"*{project}*"):
        client.delete(key)


def test_celery_run_routes_training_to_the_gpu_queue(
    project_home: Path,
    output_dir: Path,
    postgres_url: str,
    redis_broker: tuple[str, str],
    redis_online_store: tuple[Any, str],
) -> None:
    broker_url, key_prefix = redis_broker
    config = StackConfig(
        airflow_home=project_home / "airflow", log_dir=output_dir / "logs", executor="CeleryExecutor",
        sql_alchemy_conn=postgres_url, broker_url=broker_url, broker_key_prefix=key_prefix,
        result_backend=f"db+{postgres_url.replace('postgresql+psycopg2', 'postgresql')}",
        workers=(DEFAULT_WORKER, GPU_WORKER),
    )  # fmt: skip
    with AirflowStack(config, airflow_env(project_home)) as stack:
        stack.start(dag_ids=(DAG_ID,))
        assert_runnable_on_synthetic_data(stack)
        stack.unpause(DAG_ID)
        started = time.monotonic()
        run_id = stack.trigger(DAG_ID, LOGICAL_DATE, run_id=f"celery_test__{SYNTHETIC_DS}")["dag_run_id"]
        run = stack.wait_for_run(DAG_ID, run_id, timeout=RUN_TIMEOUT_S)
        waited = time.monotonic() - started
        instances = stack.task_instances(DAG_ID, run_id)

    (output_dir / "task_instances.json").write_text(json.dumps(instances, indent=2))
    table = placement_table(instances)
    (output_dir / "placement.txt").write_text(table + "\n")
    print(
        f"\nDagRun {run_id}: {run['state']} in {_seconds(run['start_date'], run['end_date']):.1f} s "
        f"(trigger to finish {waited:.1f} s)\n{table}\nlogs: {config.log_dir}"
    )

    states = {ti["task_id"]: ti["state"] for ti in instances}
    assert run["state"] == "success", f"{states}; logs in {config.log_dir}"
    assert set(states) == TASKS
    assert set(states.values()) == {"success"}, states
    for ti in instances:
        expected = GPU_WORKER if ti["task_id"] in GPU_TASKS else DEFAULT_WORKER
        assert ti["queue"] in expected.queues, (ti["task_id"], ti["queue"])
        assert ti["hostname"].startswith(f"{expected.name}@"), (ti["task_id"], ti["hostname"])
    redis_client, feast_project = redis_online_store
    assert any(redis_client.scan_iter(f"*{feast_project}*")), "the run materialized nothing into Redis"
