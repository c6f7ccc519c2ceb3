"""`make deploy-test`: docker/compose.yaml's topology as processes on this machine, and two nightly runs through it.

The services start from the compose file's own commands and environment (`tests/deploy/topology.py` says what
stands in for what): Postgres and Redis are the servers running here, each with databases and keys of this run's
own; the Airflow services (API server, scheduler, DAG processor, triggerer, the default and the `gpu` Celery
worker) are local processes; `tf-serving` is two `serving.server` replicas started with compose's TF Serving
flags. The secrets come from an env file generated as docker/.env.example describes, the data source through
compose's own `${DEEPFM_SOURCE:-movielens}` (synthetic here).

Then, through the REST API, the nightly DAG runs for two consecutive dates. The first run must put its features in
Redis under the run's Feast project, its registry in Postgres, its feature work on compose's Spark cluster (a
master and two workers: the `ingest` task's driver submits to it), `train` on the gpu worker and every other task on
the default worker, its version AVAILABLE and answering on both replicas, and `stable` on it on both; ranking
through a replica returns scores. The second run pushes the next version while a client streams Predict requests
through `stable` to a replica from the end of `evaluate` to the run's end (the release group: bless, push, and
verify_serving moving `stable`): none may fail, and the stream must see the switch. What happened goes
to `artifacts/test-output/deploy/` (`summary.json`, the placement table, every component's log, the task logs).
"""

from __future__ import annotations

import functools
import json
import shutil
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from sqlalchemy.engine import make_url

from dags.ops.processes import session_members
from dags.pipeline.config import PipelineConfig
from deepfm_model.spec.features import MOVIE_KEY, USER_KEY
from deepfm_model.spec.files import read_json, write_json
from tests import compose as cf
from tests.airflow.conftest import DAG_ID, TEST_OUTPUT, assert_runnable_on_synthetic_data
from tests.deploy.nightly import (
    RUN_SETTINGS,
    RUN_TIMEOUT_S,
    START_TIMEOUT_S,
    assert_served_everywhere,
    assert_succeeded,
    compose_env,
    finished_run,
    probe_columns,
    trigger,
    wait_for_task,
)
from tests.deploy.topology import ComposeTopology, LocalServices
from tests.services import (
    delete_redis_keys,
    postgres_database,
    postgres_params,
    redis_address,
    redis_key_space,
)
from tests.serving.helpers import request_streams

OUTPUT = TEST_OUTPUT / "deploy"
DATES = ("1998-01-30", "1998-01-31")  # consecutive, each with events on its last day (synthetic: 30 days from 01-01)
GPU_TASKS = {"training.train"}
RELEASE_AFTER = "training.evaluate"  # the last task before the release group
WORKERS = {"airflow-worker": "default", "airflow-worker-gpu": "gpu"}  # service -> the queue its tasks come from

pytestmark = [pytest.mark.slow, pytest.mark.e2e, pytest.mark.timeout(START_TIMEOUT_S + 2 * RUN_TIMEOUT_S + 300)]


@pytest.fixture
def env_file(tmp_path: Path) -> dict[str, str]:
    return compose_env(tmp_path)


@pytest.fixture
def feast_project() -> Iterator[str]:
    """A Feast project of this run's own; its keys in Redis are deleted afterwards."""
    project = f"deepfm_deploy_{uuid.uuid4().hex[:8]}"
    try:
        yield project
    finally:
        delete_redis_keys(f"*{project}*", db=0)


@pytest.fixture
def local_services(env_file: dict[str, str]) -> Iterator[LocalServices]:
    """Databases of this run's own for compose's `airflow` (created, as the postgres image creates POSTGRES_DB) and
    `feast` (left to airflow-init to create), and a Redis database and key prefix for Celery; removed after."""
    compose = cf.load_compose(env_file)
    celery_db = int(make_url(compose["x-airflow-env"]["AIRFLOW__CELERY__BROKER_URL"]).database)
    with (
        postgres_database("deepfm_deploy_airflow") as airflow_url,
        postgres_database("deepfm_deploy_feast", create=False) as feast_url,
        redis_key_space("deepfm-deploy") as (redis_db, key_prefix),
    ):
        yield LocalServices(
            postgres=postgres_params(),
            databases={"airflow": make_url(airflow_url).database, "feast": make_url(feast_url).database},
            redis=redis_address(),
            redis_databases={celery_db: redis_db},
            celery_key_prefix=key_prefix,
        )


@pytest.fixture
def topology(
    tmp_path: Path, env_file: dict[str, str], local_services: LocalServices, feast_project: str
) -> Iterator[ComposeTopology]:
    """The compose topology, not started; stopped afterwards, and no process of it may outlive the test."""
    from feature_repo.store import write_config

    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    feature_repo = tmp_path / "feature_repo"
    write_config(feature_repo)
    settings = {
        **RUN_SETTINGS,
        "DEEPFM_FEATURE_REPO": str(feature_repo),
        "DEEPFM_FEAST_PROJECT": feast_project,
        "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX": local_services.celery_key_prefix,
    }
    topology = ComposeTopology(cf.load_compose(env_file), tmp_path / "compose", OUTPUT, local_services, settings)
    with topology:
        yield topology
    left = {session: session_members(session) for session in topology.processes.session_ids}
    assert not any(left.values()), f"processes left behind, by session: {left}"


def run_nightly(topology: ComposeTopology, ds: str) -> tuple[dict, list[dict]]:
    """Trigger the nightly run of `ds` through the REST API and wait for it to succeed; return the run and tasks."""
    run, instances = finished_run(topology, trigger(topology.client, ds), OUTPUT, ds)
    assert_succeeded(run, instances, OUTPUT)
    return run, instances


def placement_table(instances: list[dict]) -> str:
    rows = [("task", "queue", "hostname", "state", "seconds")]
    for ti in sorted(instances, key=lambda ti: ti["start_date"] or ""):
        seconds = f"{ti['duration']:.1f}" if ti.get("duration") is not None else "-"
        rows.append((ti["task_id"], ti["queue"], ti["hostname"], ti["state"], seconds))
    widths = [max(len(str(row[i])) for row in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)) for row in rows)


def assert_placement(instances: list[dict]) -> dict[str, str]:
    """`train` ran on the gpu worker from the `gpu` queue, every other task on the default worker; task -> host."""
    gpu, cpu = "airflow-worker-gpu", "airflow-worker"
    for ti in instances:
        worker = gpu if ti["task_id"] in GPU_TASKS else cpu
        assert ti["queue"] == WORKERS[worker], (ti["task_id"], ti["queue"])
        assert ti["hostname"].startswith(f"{worker}@"), (ti["task_id"], ti["hostname"])
    return {ti["task_id"]: ti["hostname"] for ti in instances}


def assert_features_in_redis(project: str) -> int:
    import redis

    host, port = redis_address()
    with redis.Redis(host=host, port=port, db=0) as client:
        keys = sum(1 for _ in client.scan_iter(match=f"*{project}*", count=1000))
    assert keys > 0, f"no key of Feast project {project} in Redis: nothing was materialized there"
    return keys


def assert_registry_in_postgres(registry_url: str, project: str) -> dict[str, int]:
    """Feast's SQL registry tables hold this project's objects; returns rows per table."""
    import sqlalchemy

    engine = sqlalchemy.create_engine(registry_url)
    try:
        with engine.connect() as db:
            rows = {
                table: db.execute(
                    sqlalchemy.text(f"SELECT count(*) FROM {table} WHERE project_id = :p"), {"p": project}
                ).scalar_one()  # fmt: skip
                for table in ("entities", "data_sources", "feature_views", "feature_services")
            }
    finally:
        engine.dispose()
    assert all(rows.values()), f"Feast registry in Postgres lacks objects of {project}: {rows}"
    return rows


def test_compose_topology_runs_the_nightly_dag_twice_without_dropping_a_request(
    topology: ComposeTopology, feast_project: str
) -> None:
    from feature_repo import daily_stats
    from feature_repo import store as feature_store
    from feature_repo.store import online_features
    from serving.client import ServingClient
    from serving.ranking import Ranker

    started = time.monotonic()
    topology.start(dag_ids=(DAG_ID,), timeout=START_TIMEOUT_S)
    start_s = time.monotonic() - started
    client = topology.client
    assert_runnable_on_synthetic_data(client)
    client.unpause(DAG_ID)
    # The deployment as the workers see it: every setting from compose, mapped to this machine.
    config = PipelineConfig.from_env(topology.service_env("airflow-worker"))
    addresses = topology.serving_addresses
    assert list(config.serving_addresses) == addresses and len(addresses) == 2

    run, instances = run_nightly(topology, DATES[0])
    table = placement_table(instances)
    task_hosts = assert_placement(instances)
    redis_keys = assert_features_in_redis(feast_project)
    registry_rows = assert_registry_in_postgres(config.registry["path"], feast_project)
    first = read_json(config.run_dir(DATES[0]).verify)
    assert first["verified"] and first["verified_on"] == addresses, first
    test_rows = pd.read_parquet(config.run_dir(DATES[0]).split("test")).head(16)
    probe = probe_columns(config.run_dir(DATES[0]).split("test"))
    assert_served_everywhere(addresses, first["model_version"], probe)

    store = config.feature_store()
    with ServingClient(addresses[1], version_label="stable") as serving:
        ranker = Ranker(serving, functools.partial(online_features, store))
        candidates = list(dict.fromkeys(pd.read_parquet(config.run_dir(DATES[0]).split("test"))[MOVIE_KEY]))[:20]
        ranked = ranker.rank(str(test_rows[USER_KEY].iloc[0]), candidates)
    scores = [score for _, score in ranked]
    assert ranked and all(0 < s < 1 for s in scores) and scores == sorted(scores, reverse=True), ranked

    def send(stream_client: ServingClient) -> int:
        version = stream_client.predict_versioned(probe)[1]
        time.sleep(0.02)  # a steady client, not one that takes a core from the run
        return version

    # The stream runs through the second night's release (bless, push, verify_serving): what changes serving. Through
    # the whole night it was 7,000 Predict calls that took the cores the night's own tasks needed.
    second_id = trigger(client, DATES[1])
    wait_for_task(topology, second_id, RELEASE_AFTER, "success", RUN_TIMEOUT_S)
    switch_started = time.monotonic()
    with request_streams(addresses[0], send, version_label="stable") as stream:
        second_run, second_instances = finished_run(topology, second_id, OUTPUT, DATES[1])
        assert_succeeded(second_run, second_instances, OUTPUT)
        second = read_json(config.run_dir(DATES[1]).verify)
        assert second["verified"] and second["model_version"] == first["model_version"] + 1, second
        deadline = time.monotonic() + 60
        while second["model_version"] not in stream.answers[-5:] and time.monotonic() < deadline:
            time.sleep(0.2)
    switch_s = time.monotonic() - switch_started
    assert_served_everywhere(addresses, second["model_version"], probe)
    task_hosts_second = assert_placement(second_instances)
    table += "\n\n" + placement_table(second_instances)
    (OUTPUT / "placement.txt").write_text(table + "\n")

    seen = sorted(set(stream.answers))
    spark = topology.spark_status()
    manifest = read_json(feature_store.data_dir(config.feature_repo) / daily_stats.AGGREGATES_DIR
                         / daily_stats.MANIFEST_FILE)  # fmt: skip
    summary = {
        "feature_engine": manifest["engine"].split()[0],
        "feature_engine_version": manifest["engine"],
        "spark_workers": spark["aliveworkers"],
        "spark_applications": [(app["name"], app["state"], app["cores"]) for app in spark["completedapps"]],
        "online_store": store.config.online_store.type,
        "registry": store.config.registry.registry_type,
        "serving_addresses": addresses,
        "verified_on": second["verified_on"],
        "stable_version": second["model_version"],
        "previous_stable": second["previous_stable"],
        "failed_requests_during_switch": len(stream.errors),
        "requests_during_switch": len(stream.answers) + len(stream.errors),
        "versions_answered_during_switch": seen,
        "task_hosts": task_hosts_second,
        "task_hosts_first_run": task_hosts,
        "feast_project": feast_project,
        "redis_keys": redis_keys,
        "registry_rows": registry_rows,
        "runs": {ds: r["state"] for ds, r in zip(DATES, (run, second_run), strict=True)},
        "ranked": ranked[:5],
        "start_s": round(start_s, 1),
        "switch_s": round(switch_s, 1),
        "wall_time_s": round(time.monotonic() - started, 1),
    }
    write_json(OUTPUT / "summary.json", summary)
    print(f"\n{table}\n\n{json.dumps(summary, indent=2)}\nlogs: {OUTPUT}")

    assert stream.errors == [], f"{len(stream.errors)} requests failed during the switch: {stream.errors[:3]}"
    # compose's Celery visibility timeout reached the executor (it warns when none is set)
    assert "No visibility_timeout configured" not in (OUTPUT / "airflow-scheduler.log").read_text()
    assert seen == [first["model_version"], second["model_version"]], seen
    assert (summary["online_store"], summary["registry"]) == ("redis", "sql"), summary
    assert (summary["feature_engine"], summary["spark_workers"]) == ("spark", 2), summary
    # each night's ingest ran its feature work as an application of the cluster (Feast's on DuckDB: RUN_SETTINGS)
    assert [name for name, _, _ in summary["spark_applications"]] == ["deepfm-features"] * len(DATES), summary
    assert second["verified_on"] == addresses, second
