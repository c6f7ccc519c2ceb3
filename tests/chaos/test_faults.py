"""`make chaos-test`: the deploy topology with a part killed, restarted or starved while a nightly run goes on.

docker/compose.yaml's topology runs as processes (`tests/deploy/topology.py`), with a Postgres and a Redis of the
test's own (`tests/chaos/servers.py`) so that they can be restarted, and the model base path on a small file
system. After one undisturbed night, each case runs the next date's night and strikes while one task runs:

| case | strikes | the fault |
| --- | --- | --- |
| `gpu_worker_killed` | 8 s into `train` | SIGKILL to every process of the `gpu` worker (`docker kill`), then it starts again |
| `redis_restarted` | at `update_feature_store`'s first online write | Redis restarted (SIGTERM, the same command again) |
| `postgres_restarted` | once `build_training_set` has its Feast registry session | Postgres (Airflow's metadata DB and the Feast registry) restarted (fast shutdown) |
| `scheduler_killed` | 2 s into `evaluate` | SIGKILL to the scheduler, then it starts again |
| `replica_killed` | in `verify_serving`, once replica 2 has loaded the pushed version | SIGKILL to that replica; it starts again once verification has found it unreachable |
| `disk_full` | as `bless` starts, before the push | the model base path's file system filled to its last 16 KB |

Each run must either complete as an undisturbed one does (every task succeeded, exactly one new version, the next
number, `stable` on it on every replica, the online rows equal to the offline ones) or fail cleanly (the failed
task's log names the fault, no version and no staging folder added, `stable` unchanged on every replica), and
then a re-run of the date, once the fault is healed, completes and pushes once. Requests to `stable` go to the
replica that is never killed during the whole case: each is counted, and none may fail. What happened goes to
`artifacts/test-output/chaos/summary.json`, one entry per case.
"""

from __future__ import annotations

import datetime as dt
import math
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from dags.ops.processes import Processes, session_members
from dags.pipeline.config import PipelineConfig
from deepfm_model.spec.dates import data_cutoff
from deepfm_model.spec.files import read_json, write_json
from tests import compose as cf
from tests.airflow.conftest import DAG_ID, TEST_OUTPUT, assert_runnable_on_synthetic_data
from tests.chaos.servers import PostgresServer, RedisServer, SmallFileSystem, private_folder
from tests.deploy.nightly import (
    RUN_SETTINGS,
    RUN_TIMEOUT_S,
    START_TIMEOUT_S,
    SYNTHETIC_SOURCE,
    assert_served_everywhere,
    assert_succeeded,
    compose_env,
    finished_run,
    poll,
    probe_columns,
    trigger,
    wait_for_task,
)
from tests.deploy.topology import SERVING, ComposeTopology, LocalServices
from tests.serving.helpers import request_streams

OUTPUT = TEST_OUTPUT / "chaos"
SUMMARY = OUTPUT / "summary.json"
BASELINE_DS = "1998-01-24"  # the undisturbed night; each case takes the next date (synthetic: 30 days from 01-01)
MODELS_VOLUME = "deepfm-models"
MODELS_FS_MB = 256
RESTART_AFTER_S = 3.0  # how long a killed part stays down
SKEW_PAIRS = 1000
# Beyond the deploy test's settings: the blessing's NDCG tolerances, against the serving model and against
# popularity, so that seven 3-epoch nights on a few thousand events each push a version (the chaos is in the parts,
# not in the gate: on 1998-01-25 and 01-27 recommend trails popularity by 0.06 and 0.05, beyond the noise).
CHAOS_SETTINGS = {**RUN_SETTINGS, "DEEPFM_NDCG_TOLERANCE": "0.2", "DEEPFM_POPULARITY_TOLERANCE": "0.2"}

# Each case: its night, a re-run where it fails, and (for the first) the start and the undisturbed night.
pytestmark = [
    pytest.mark.slow,
    pytest.mark.e2e,
    pytest.mark.chaos,
    pytest.mark.timeout(START_TIMEOUT_S + 3 * RUN_TIMEOUT_S),
]


@dataclass
class Deployment:
    """The running topology and the parts a case may break."""

    topology: ComposeTopology
    redis: RedisServer
    postgres: PostgresServer
    models_fs: SmallFileSystem
    config: PipelineConfig
    versions_before: list[int] = field(default_factory=list)  # on the base path when the case began
    run_id: str = ""  # of the case's run

    def task_log(self, task_id: str, attempt: int = 1) -> Path:
        """The log file of a try of the case's run, in the `airflow-logs` volume (Airflow's default file layout)."""
        return (
            OUTPUT
            / "airflow-logs"
            / f"dag_id={DAG_ID}"
            / f"run_id={self.run_id}"
            / f"task_id={task_id}"
            / f"attempt={attempt}.log"
        )

    @property
    def addresses(self) -> list[str]:
        return self.topology.serving_addresses

    def versions(self) -> list[int]:
        from serving.push import list_versions

        return list_versions(self.config.model_base_path, self.config.model_name)

    def leftovers(self) -> list[str]:
        """Hidden folders of an interrupted push (staging, deleting) under the model's folder."""
        model_dir = Path(self.config.model_base_path) / self.config.model_name
        return sorted(p.name for p in model_dir.iterdir() if p.is_dir() and p.name.startswith("."))

    def stable(self) -> list[int]:
        """The version each replica resolves `stable` to."""
        from serving.client import ServingClient

        resolved = []
        for address in self.addresses:
            with ServingClient(address, version_label="stable") as client:
                resolved.append(client.metadata().version)
        return resolved


@dataclass(frozen=True)
class Case:
    name: str
    fault: str
    task: str  # strikes while this task runs ...
    moment: str  # ... at this moment of it
    arm: Callable[[Deployment], Callable[[], bool]]  # when the task runs: the test of that moment
    strike: Callable[[Deployment], object]
    heal: Callable[[Deployment], object]  # at once after the strike, or only before the re-run when `fails`
    fails: bool = False  # the run is expected to fail cleanly (then healed and re-run)
    retry_within: Callable[[Deployment], float] | None = None  # the struck task's next try must begin this soon


def _heartbeat_timeout_and_retry(deployment: Deployment) -> float:
    """compose's heartbeat timeout (Airflow's default, 300 s, would fail this), then the scheduler's check every
    10 s, the retry delay (20 s) and a margin for a loaded machine."""
    env = deployment.topology.service_env("airflow-scheduler")
    return float(env["AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"]) + 10 + 20 + 30


def _kill_and_restart(service: str, replica: int = 0) -> tuple[Callable, Callable]:
    def strike(deployment: Deployment) -> None:
        deployment.topology.kill(service, replica)

    def heal(deployment: Deployment) -> None:
        time.sleep(RESTART_AFTER_S)  # down for a while, as a node that is replaced
        deployment.topology.start_replica(service, replica)

    return strike, heal


def _after(seconds: float) -> Callable[[Deployment], Callable[[], bool]]:
    def arm(_deployment: Deployment) -> Callable[[], bool]:
        armed = time.monotonic()
        return lambda: time.monotonic() - armed >= seconds

    return arm


def _redis_writes_begun(deployment: Deployment) -> Callable[[], bool]:
    """The task's first write to the online store (Feast writes each entity's row with HSET)."""
    before = deployment.redis.calls("hset")
    return lambda: deployment.redis.calls("hset") > before


def _registry_session_opened(deployment: Deployment) -> Callable[[], bool]:
    """The task has opened its session on the Feast registry's database."""
    before = deployment.postgres.sessions("feast")
    return lambda: bool(deployment.postgres.sessions("feast") - before)


def _replica_serves_the_new_version(deployment: Deployment) -> Callable[[], bool]:
    """Replica 2 has loaded the version just pushed: verification is about to ask it."""
    from serving.client import ServingClient

    new = max(deployment.versions_before) + 1

    def loaded() -> bool:
        with ServingClient(deployment.addresses[1]) as client:
            return any(s.version == new and s.state == "AVAILABLE" for s in client.model_status())

    return loaded


def _restart_replica_once_verification_waits(deployment: Deployment) -> None:
    """Start replica 2 again once `verify_serving` has found it unreachable: the task must wait for it."""
    address = deployment.addresses[1]
    log = deployment.task_log("release.verify_serving")
    poll(deployment.topology, lambda: log.is_file() and f"{address} not ready yet" in log.read_text(),
         f"verify_serving to find {address} unreachable", RUN_TIMEOUT_S)  # fmt: skip
    deployment.topology.start_replica(SERVING, 1)


def _nothing(_deployment: Deployment) -> None:
    return None


CASES = [
    Case("gpu_worker_killed", "SIGKILL to the gpu Celery worker (every process), then started again",
         "training.train", "8 s in", _after(8.0), *_kill_and_restart("airflow-worker-gpu"),
         retry_within=_heartbeat_timeout_and_retry),
    Case("redis_restarted", "Redis restarted (SIGTERM, then its command again)",
         "features.update_feature_store", "its first write to the online store", _redis_writes_begun,
         lambda d: d.redis.restart(), _nothing),
    Case("postgres_restarted", "Postgres restarted (fast shutdown, then its command again)",
         "training.build_training_set", "its first session on the Feast registry", _registry_session_opened,
         lambda d: d.postgres.restart(), _nothing),
    Case("scheduler_killed", "SIGKILL to the scheduler, then started again",
         "training.evaluate", "2 s in", _after(2.0), *_kill_and_restart("airflow-scheduler")),
    Case("replica_killed", "SIGKILL to serving replica 2, started again once verification found it unreachable",
         "release.verify_serving", "replica 2 has loaded the pushed version", _replica_serves_the_new_version,
         _kill_and_restart(SERVING, 1)[0], _restart_replica_once_verification_waits),
    Case("disk_full", "the model base path's file system full (16 KB left) from before the push",
         "release.bless", "at once", _after(0.0), lambda d: d.models_fs.fill(), lambda d: d.models_fs.empty(),
         fails=True),
]  # fmt: skip
CASE_DATES = {
    case.name: str(dt.date.fromisoformat(BASELINE_DS) + dt.timedelta(days=i + 1)) for i, case in enumerate(CASES)
}


@pytest.fixture(scope="module")
def deployment() -> Iterator[Deployment]:
    """The topology started on services of its own, after one undisturbed night; everything stopped after."""
    from feature_repo.store import write_config

    shutil.rmtree(OUTPUT, ignore_errors=True)
    OUTPUT.mkdir(parents=True)
    with private_folder("deepfm-chaos-") as root, Processes(OUTPUT) as services:
        # compose's own 30 s config poll: `replica_killed` strikes while `verify_serving` waits for the replicas
        env = compose_env(root, SYNTHETIC_SOURCE)
        compose = cf.load_compose(env)
        redis = RedisServer(services, root / "redis", cf.as_list(compose["services"]["redis"]["command"]))
        postgres = PostgresServer(services, root / "postgres")
        redis.start()
        postgres.start()
        postgres.create_database("airflow")  # as the postgres image creates POSTGRES_DB; airflow-init makes `feast`
        local = LocalServices(
            postgres=postgres.params, databases={"airflow": "airflow", "feast": "feast"},
            redis=("127.0.0.1", redis.port), redis_databases={}, celery_key_prefix="",
        )  # fmt: skip
        write_config(root / "feature_repo")
        settings = {**CHAOS_SETTINGS, "DEEPFM_FEATURE_REPO": str(root / "feature_repo")}
        topology = ComposeTopology(compose, root / "compose", OUTPUT, local, settings)
        with SmallFileSystem(topology.volume(MODELS_VOLUME), MODELS_FS_MB) as models_fs, topology:
            topology.start(dag_ids=(DAG_ID,), timeout=START_TIMEOUT_S)
            assert_runnable_on_synthetic_data(topology.client)
            topology.client.unpause(DAG_ID)
            config = PipelineConfig.from_env(topology.service_env("airflow-worker"))
            deployment = Deployment(topology, redis, postgres, models_fs, config)
            run, instances = finished_run(topology, trigger(topology.client, BASELINE_DS, "chaos"), OUTPUT, BASELINE_DS)
            assert_succeeded(run, instances, OUTPUT)
            yield deployment
        left = {session: session_members(session) for session in topology.processes.session_ids}
        assert not any(left.values()), f"processes left behind, by session: {left}"


def _record(name: str, entry: dict) -> None:
    summary = read_json(SUMMARY) or {}
    summary[name] = entry
    write_json(SUMMARY, summary)


def _task(instances: list[dict], task_id: str) -> dict:
    return next(ti for ti in instances if ti["task_id"] == task_id)


def _failure_log(deployment: Deployment, run_id: str, instances: list[dict]) -> tuple[str, str]:
    """(task id, its last try's log) of the first failed task."""
    failed = [ti for ti in instances if ti["state"] == "failed"]
    assert failed, f"{run_id} failed with no failed task: {[(ti['task_id'], ti['state']) for ti in instances]}"
    ti = failed[0]
    lines = deployment.topology.client.task_log(DAG_ID, run_id, ti["task_id"], ti["try_number"])
    return ti["task_id"], "\n".join(lines)


def _clear_failed(deployment: Deployment, run_id: str) -> None:
    """Re-run the date: its failed tasks and everything after them, as the UI's "Clear" does."""
    body = {"dag_run_id": run_id, "only_failed": True, "include_downstream": True, "reset_dag_runs": True,
            "dry_run": False}  # fmt: skip
    deployment.topology.client.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", json=body)


def _assert_like_undisturbed(deployment: Deployment, ds: str, versions_before: list[int]) -> int:
    """One new version, the next number, `stable` on it everywhere, online rows equal to offline; returns it."""
    from feature_repo.skew import skew_report

    pushed = read_json(deployment.config.run_dir(ds).push)["model_version"]
    assert deployment.versions()[-1] == pushed == max(versions_before) + 1, (versions_before, deployment.versions())
    assert set(deployment.versions()) - set(versions_before) == {pushed}, deployment.versions()
    assert deployment.leftovers() == [], deployment.leftovers()
    probe = probe_columns(deployment.config.run_dir(ds).split("test"))
    assert_served_everywhere(deployment.addresses, pushed, probe)
    report = skew_report(deployment.config.feature_store(), SKEW_PAIRS, as_of=data_cutoff(ds) + dt.timedelta(hours=1))
    assert report["ok"], f"online rows differ from offline ones after the run: {report}"
    return pushed


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_a_night_survives(deployment: Deployment, case: Case) -> None:
    ds = CASE_DATES[case.name]
    topology = deployment.topology
    versions_before, stable_before = deployment.versions(), deployment.stable()
    deployment.versions_before = versions_before
    probe = probe_columns(deployment.config.run_dir(BASELINE_DS).split("test"))

    def send(client) -> int:
        version = client.predict_versioned(probe)[1]
        time.sleep(0.02)  # a steady client, not one that takes a core from the run
        return version

    entry: dict = {"fault": case.fault, "date": ds, "struck_during": case.task, "moment": case.moment}
    started = time.monotonic()
    address = deployment.addresses[0]  # requests go to replica 1: no case strikes it
    with request_streams(address, send, version_label="stable") as stream:
        run_id = deployment.run_id = trigger(topology.client, ds, "chaos")
        running = wait_for_task(topology, run_id, case.task, "running", RUN_TIMEOUT_S)
        poll(topology, case.arm(deployment), f"{case.moment} of {case.task}", RUN_TIMEOUT_S, interval=0.05)
        entry["struck_at_s_into_task"] = round(_seconds_since(running["start_date"]), 1)
        struck = dt.datetime.now(dt.UTC)
        case.strike(deployment)
        if not case.fails:
            case.heal(deployment)
        run, instances = finished_run(topology, run_id, OUTPUT, ds)
        entry["outcome"] = "completed" if run["state"] == "success" else "failed"
        entry["tries"] = {ti["task_id"]: ti["try_number"] for ti in instances if ti["try_number"] > 1}
        if case.task in entry["tries"]:  # the try that finished began this long after the strike
            last_try = _task(instances, case.task)["start_date"]
            entry["retried_s_after_strike"] = round((dt.datetime.fromisoformat(last_try) - struck).total_seconds(), 1)
        if run["state"] == "failed":
            failed_task, log = _failure_log(deployment, run_id, instances)
            entry.update(failed_task=failed_task, versions_added=sorted(set(deployment.versions()) - set(versions_before)),
                         leftovers=deployment.leftovers(), stable_after_failure=deployment.stable())  # fmt: skip
            entry["reason_names_the_fault"] = "No space left on device" in log
            case.heal(deployment)
            _clear_failed(deployment, run_id)
            rerun, instances = finished_run(topology, run_id, OUTPUT, f"{ds}-rerun")
            entry["rerun"] = rerun["state"]
        entry["task_instances"] = {ti["task_id"]: ti["state"] for ti in instances}
        entry["versions_pushed"] = len(set(deployment.versions()) - set(versions_before))
        poll(topology, lambda: len(stream.answers) > 0, "an answer to the request stream", 30)
    entry.update(
        requests_sent=len(stream.answers) + len(stream.errors), requests_failed=len(stream.errors),
        request_errors=[str(error).splitlines()[0] for error in stream.errors[:3]],
        wall_s=round(time.monotonic() - started, 1),
    )  # fmt: skip
    _record(case.name, entry)

    if case.fails:
        assert entry["outcome"] == "failed", entry
        assert entry["reason_names_the_fault"], f"{entry['failed_task']}'s log does not name the fault: {entry}"
        assert entry["versions_added"] == [] and entry["leftovers"] == [], entry
        assert entry["stable_after_failure"] == stable_before, (stable_before, entry)
        assert entry["rerun"] == "success", entry
    else:
        assert entry["outcome"] == "completed", entry
    if case.retry_within is not None:
        assert entry.get("retried_s_after_strike", math.inf) <= case.retry_within(deployment), entry
    assert_succeeded(run if not case.fails else rerun, instances, OUTPUT)
    entry["pushed_version"] = _assert_like_undisturbed(deployment, ds, versions_before)
    entry["converged"] = True
    _record(case.name, entry)
    assert stream.errors == [], f"{len(stream.errors)} of {entry['requests_sent']} requests to stable failed: {entry}"


def _seconds_since(iso: str) -> float:
    return (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(iso)).total_seconds()
