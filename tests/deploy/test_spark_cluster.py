"""compose's Spark cluster as processes (`spark-master` and two `spark-worker`s, from compose's own commands): a
night's feature work submitted to it survives a worker killed during a stage, and writes what DuckDB writes.

The worker is killed (SIGKILL to its process session: the worker, its executor and the executor's Python workers,
as `docker kill` does to a container) while its executor is running tasks of a stage; Spark reruns the lost tasks
on the other worker's executor, and the night's sources equal the DuckDB night's over the same source, file by file.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dags.ops.processes import free_port, session_members
from feature_repo import spark_engine
from tests import compose as cf
from tests.airflow.conftest import TEST_OUTPUT
from tests.deploy.nightly import compose_env
from tests.deploy.topology import ComposeTopology, LocalServices
from tests.features.engines import assert_same_sources, night, write_source
from tests.services import postgres_params, redis_address
from tests.spark_settings import JVM_CONF

OUTPUT = TEST_OUTPUT / "spark-cluster"
WORKER = "spark-worker"
DS = "1998-01-06"
DONE_BEFORE_THE_KILL = 40  # tasks finished first: the kill lands inside the night's work, not before it
TIMEOUT_S = 300
STATUS_TIMEOUT_S = 60  # a status page's reads, retried (`status_json`)
# What a task's end, sent before the pause, may take to reach the driver's status API: its view lags by
# `spark.ui.liveUpdate.period` (100 ms), and by its event queue's backlog on a loaded machine (likely past 1 s in the
# suite: a kill after a 1 s wait once found the task ended).
SETTLE_S = 5.0

pytestmark = [pytest.mark.slow, pytest.mark.timeout(2 * TIMEOUT_S + 120)]


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ComposeTopology]:
    """compose's Spark services started (what they depend on: nothing else), with both workers registered."""
    compose = cf.load_compose(compose_env(tmp_path))
    # The Airflow services are not started: their databases are named only for the topology's mapping.
    unused = LocalServices(postgres=postgres_params(), databases={"airflow": "unused", "feast": "unused"},
                           redis=redis_address(), redis_databases={}, celery_key_prefix="")  # fmt: skip
    topology = ComposeTopology(compose, tmp_path / "compose", OUTPUT, unused)
    with topology:
        topology.start(services=(WORKER,), timeout=TIMEOUT_S)
        replicas = topology.replica_count(WORKER)
        assert replicas == 2, "compose starts two Spark workers"
        deadline = time.monotonic() + TIMEOUT_S
        while topology.spark_status()["aliveworkers"] < replicas:
            assert time.monotonic() < deadline, f"the workers did not register; logs in {OUTPUT}"
            time.sleep(0.5)
        yield topology
    left = {session: session_members(session) for session in topology.processes.session_ids}
    assert not any(left.values()), f"processes left behind, by session: {left}"


def status_json(url: str) -> Any:
    """The JSON a Spark status page answers. A read that times out or fails to connect (a JVM starved on a loaded
    2-core machine: one read timed out after 10 s in a fresh-clone suite) is asked again until `STATUS_TIMEOUT_S`."""
    import httpx

    deadline = time.monotonic() + STATUS_TIMEOUT_S
    while True:
        try:
            return httpx.get(url, timeout=10).json()
        except httpx.TransportError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def executor_of(cluster: ComposeTopology, replica: int, app_id: str) -> str | None:
    """The id of the executor of application `app_id` that worker `replica` runs, if any."""
    status = status_json(f"http://127.0.0.1:{cluster.local_port(WORKER, 8081, replica)}/json/")
    ids = [str(e["id"]) for e in status["executors"] if e["appid"] == app_id]
    return ids[0] if ids else None


def running_tasks(api: str) -> dict[str, int]:
    """How many tasks the driver sees running now, by executor id."""
    running: dict[str, int] = {}
    for stage in status_json(f"{api}/stages?status=active&details=true"):
        for task in stage.get("tasks", {}).values():
            if task["status"] == "RUNNING":
                running[task["executorId"]] = running.get(task["executorId"], 0) + 1
    return running


def kill_while_running(cluster: ComposeTopology, api: str, busy: dict[str, int]) -> tuple[int, str, int] | None:
    """Kill the worker whose executor runs tasks, once it is certain the kill loses them: the worker is paused first
    (a paused executor finishes nothing); a task the driver still sees running on it `SETTLE_S` later was running at
    the pause, and the kill loses it. Otherwise the worker resumes and the night goes on. (replica, executor, tasks
    lost) of the kill, or None."""
    app_id = api.rsplit("/", 1)[1]
    for replica in range(cluster.replica_count(WORKER)):
        executor = executor_of(cluster, replica, app_id)
        if executor not in busy:
            continue
        cluster.pause(WORKER, replica)
        settled = time.monotonic() + SETTLE_S
        while (running := running_tasks(api).get(executor, 0)) and time.monotonic() < settled:
            time.sleep(0.05)
        if running:
            cluster.kill(WORKER, replica)
            return replica, executor, running
        cluster.pause(WORKER, replica, resume=True)
    return None


def test_a_worker_killed_during_a_stage_is_survived_with_the_same_outputs(cluster, tmp_path):
    source = write_source(tmp_path / "source")
    ui_port = free_port()  # the driver's status API: which executor runs tasks now
    spark = spark_engine.session(cluster.spark_master_url, {**JVM_CONF, "spark.ui.enabled": "true",
                                                            "spark.ui.port": str(ui_port),
                                                            "spark.sql.shuffle.partitions": "4"})  # fmt: skip
    try:
        api = f"http://127.0.0.1:{ui_port}/api/v1/applications/{spark.sparkContext.applicationId}"
        outcome: dict = {}

        def run() -> None:
            try:
                outcome["counts"] = night("spark", source, DS, tmp_path / "spark", spark)
            except BaseException as error:  # noqa: BLE001 (reported by the test's thread)
                outcome["error"] = error

        thread = threading.Thread(target=run, daemon=True)
        thread.start()
        killed = None
        deadline = time.monotonic() + TIMEOUT_S
        while killed is None and thread.is_alive() and time.monotonic() < deadline:
            completed = sum(e["completedTasks"] for e in status_json(f"{api}/executors"))
            busy = running_tasks(api)
            if busy and completed >= DONE_BEFORE_THE_KILL:
                killed = kill_while_running(cluster, api, busy)
            time.sleep(0.05)
        assert killed is not None, f"no executor was seen running tasks of the night: {outcome}"
        thread.join(TIMEOUT_S)
        assert not thread.is_alive(), "the night did not finish after the worker was killed"
        assert "error" not in outcome, outcome.get("error")
        assert outcome["counts"] == {"events": 3000, "users": 80, "movies": 50}
        stages = status_json(f"{api}/stages?status=complete")
        failed = sum(s["numFailedTasks"] for s in stages)
        retried = [s["stageId"] for s in stages if s["attemptId"] > 0]
        print(f"killed worker {killed[0] + 1} while its executor {killed[1]} ran {killed[2]} task(s); "
              f"failed tasks {failed}, stages run again {retried}")  # fmt: skip
        # The tasks running on the killed executor fail and run again; should one have ended unseen before the
        # pause, the shuffle output the executor held is lost and its stages run again.
        assert failed or retried, "nothing of the night was rerun: the kill landed outside its work"
        (lost,) = [e for e in status_json(f"{api}/allexecutors") if e["id"] == killed[1]]
        assert not lost["isActive"] and "worker lost" in lost["removeReason"], lost
    finally:
        spark.stop()
    assert cluster.spark_status()["aliveworkers"] == 1
    night("duckdb", source, DS, tmp_path / "duckdb")
    assert_same_sources(tmp_path / "spark", tmp_path / "duckdb")
