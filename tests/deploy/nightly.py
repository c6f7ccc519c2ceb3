"""What the deploy and chaos tests share: the run's settings, triggering a nightly run, and checking what serves it."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dags.ops.airflow_client import AirflowClient
from dags.ops.processes import StackError
from deepfm_model.spec.features import FEATURE_NAMES
from serving.inputs import to_feature_columns
from tests import compose as cf
from tests.airflow.conftest import DAG_ID, TASKS
from tests.deploy.topology import ComposeTopology
from tests.spark_settings import JVM_CONF

RUN_TIMEOUT_S = 10 * 60
START_TIMEOUT_S = 5 * 60
# What a test run sets beyond compose's environment: few epochs, only triggered runs (the synthetic data is from
# 1998: tonight's scheduled run would find none), and a blessing tolerance that lets a 3-epoch candidate on a few
# thousand events trail the serving one by a little (the AUC floor still applies), and the popularity prior:
# the synthetic world's picks follow popularity alone, a chart DeepFM cannot learn from a few thousand events.
# Feast's offline work stays on DuckDB: on Spark it is three more applications a night, about 5 minutes of a
# 2-core machine's suite (`tests/features/test_feast_on_spark.py` and `test_spark_engine.py` run it on Spark);
# the raw checks, the aggregates, the fold and the labelled events still run on compose's cluster, its JVMs with
# the JIT's first tier alone (`tests/spark_settings.py`: a few thousand rows a night).
RUN_SETTINGS = {
    "DEEPFM_EPOCHS": "3",
    "DEEPFM_PICK_PRIOR": "1",
    "DEEPFM_FEAST_OFFLINE_STORE": "duckdb",
    "DEEPFM_SPARK_CONF": json.dumps(JVM_CONF),
    "DEEPFM_AUC_TOLERANCE": "0.05",
    "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
}


SYNTHETIC_SOURCE = {"DEEPFM_SOURCE": "synthetic"}
# TF Serving reading its model config every 2 s: compose's 30 s default made `verify_serving` wait up to 30 s a night.
DEPLOY_ENV = {**SYNTHETIC_SOURCE, "TFSERVING_CONFIG_POLL_SECONDS": "2"}


def compose_env(folder: Path, settings: Mapping[str, str] = DEPLOY_ENV) -> dict[str, str]:
    """docker/.env as a person would fill it in (random secrets), with `settings`."""
    path = folder / "docker.env"
    cf.generate_env_file(path, settings)
    return cf.read_env_file(path)


def trigger(client: AirflowClient, ds: str, prefix: str = "deploy_test") -> str:
    """Trigger the nightly run of `ds` through the REST API; returns its run id."""
    return client.trigger(DAG_ID, f"{ds}T00:00:00Z", run_id=f"{prefix}__{ds}")["dag_run_id"]


def finished_run(topology: ComposeTopology, run_id: str, output: Path, ds: str) -> tuple[dict, list[dict]]:
    """The run and its task instances once it has finished (kept as `task_instances-<ds>.json` in `output`)."""
    client = topology.client
    run = poll(topology, lambda: _finished(client, run_id), f"{run_id} to finish", RUN_TIMEOUT_S, interval=2)
    instances = client.task_instances(DAG_ID, run_id)
    (output / f"task_instances-{ds}.json").write_text(json.dumps(instances, indent=2))
    return run, instances


def _finished(client: AirflowClient, run_id: str) -> dict | None:
    run = client.dag_run(DAG_ID, run_id)
    return run if run["state"] in ("success", "failed") else None


def poll(topology: ComposeTopology, ready: Callable[[], Any], what: str, timeout: float, interval: float = 0.5) -> Any:
    """Call `ready` until it returns something truthy; return it. Errors of the REST API (while a service
    restarts) are waited out; the topology's processes are checked on every poll."""
    import httpx

    deadline = time.monotonic() + timeout
    while True:
        topology.processes.check_alive()
        try:
            result = ready()
        except (StackError, httpx.HTTPError, ValueError):
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def assert_succeeded(run: dict, instances: list[dict], output: Path) -> None:
    states = {ti["task_id"]: ti["state"] for ti in instances}
    assert run["state"] == "success", f"{run['dag_run_id']}: {states}; logs in {output}"
    assert set(states) == TASKS and set(states.values()) == {"success"}, states


def probe_columns(test_split: Path, rows: int = 16) -> dict[str, np.ndarray]:
    """Feature columns of the first rows of a run's test split, as a Predict request takes them."""
    frame = pd.read_parquet(test_split).head(rows)
    return to_feature_columns({name: frame[name].to_numpy() for name in FEATURE_NAMES})


def assert_served_everywhere(addresses: list[str], version: int, probe: dict[str, np.ndarray]) -> None:
    """Every replica reports `version` AVAILABLE, answers it, and resolves `stable` to it."""
    from serving.client import ServingClient

    for address in addresses:
        with ServingClient(address, version=version) as client:
            states = {status.version: status.state for status in client.model_status()}
            assert states.get(version) == "AVAILABLE", (address, states)
            _outputs, answered = client.predict_versioned(probe)
            assert answered == version, (address, answered)
        with ServingClient(address, version_label="stable") as client:
            assert client.metadata().version == version, address


def wait_for_task(topology: ComposeTopology, run_id: str, task_id: str, state: str, timeout: float) -> dict:
    """The task instance once it is in `state`; fails at once if the run finishes first."""
    client = topology.client

    def reached() -> dict | None:
        for ti in client.task_instances(DAG_ID, run_id):
            if ti["task_id"] == task_id and ti["state"] == state:
                return ti
        if _finished(client, run_id):
            raise AssertionError(f"{run_id} finished before {task_id} was {state}")
        return None

    return poll(topology, reached, f"{task_id} of {run_id} to be {state}", timeout)
