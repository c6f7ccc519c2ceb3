"""Airflow's workers hand the stages' libraries to every task they fork (`dags.ops.task_preload`): a worker started
by Airflow's own start-method setting from the stack's environment has them before its task imports anything, with
Feast uninstrumented and no TensorFlow device touched; Celery workers import them before their pool starts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from dags.ops.airflow_stack import AirflowStack, CeleryWorker, StackConfig
from dags.ops.task_preload import CELERY_ENV, LOCAL_EXECUTOR_ENV, PRELOAD
from tests.e2e.conftest import PROJECT_ROOT

# A scheduler in miniature: Airflow's own reading of the start method, then one worker process as the
# LocalExecutor starts its workers (`multiprocessing.Process`), running `report`.
START_ONE_WORKER = """
import multiprocessing, sys
from airflow.utils.process_utils import set_component_mp_start_method
from tests.pipeline.test_task_preload import report
set_component_mp_start_method("scheduler")
worker = multiprocessing.Process(target=report, args=(sys.argv[1],))
worker.start()
worker.join()
sys.exit(worker.exitcode)
"""


def report(path: str) -> None:
    """What a worker process holds when it starts: the preloaded libraries, and their state."""
    found: dict[str, object] = {"inherited": [name for name in PRELOAD if name in sys.modules]}
    if "feast" in sys.modules:
        import feast
        import typeguard

        try:
            feast.Entity(name="user", join_keys=["user"], description=5)  # a wrong type: instrumentation raises
            found["feast_checked"] = False
        except typeguard.TypeCheckError:
            found["feast_checked"] = True
    if "tensorflow" in sys.modules:
        from tensorflow.python.eager import context

        found["tensorflow_initialised"] = context.context()._initialized  # devices are listed when it is
    Path(path).write_text(json.dumps(found))


def start_one_worker(tmp_path: Path, settings: dict[str, str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "AIRFLOW_HOME": str(tmp_path / "airflow"), **settings}
    out = tmp_path / "worker.json"
    done = subprocess.run([sys.executable, "-W", "ignore", "-c", START_ONE_WORKER, str(out)], cwd=PROJECT_ROOT,
                          env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


@pytest.mark.slow
def test_a_local_executor_worker_starts_with_the_libraries_imported(tmp_path: Path) -> None:
    found = start_one_worker(tmp_path, LOCAL_EXECUTOR_ENV)
    assert found == {"inherited": list(PRELOAD), "feast_checked": False, "tensorflow_initialised": False}


def test_without_the_settings_a_worker_starts_with_none_of_them(tmp_path: Path) -> None:
    assert start_one_worker(tmp_path, {}) == {"inherited": []}  # so the case above shows the settings at work


def test_celery_workers_import_the_libraries_before_their_pool_starts() -> None:
    from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG
    from celery import Celery

    from dags.ops.celery_config import CELERY_CONFIG

    assert DEFAULT_CELERY_CONFIG.items() <= CELERY_CONFIG.items()  # Airflow's configuration, kept whole
    app = Celery(config_source=CELERY_CONFIG)
    modules = list(app.loader.default_modules)  # what `init_worker` imports, before the pool is forked
    assert [name for name in modules if name in PRELOAD] == list(PRELOAD)


def test_the_stack_sets_the_preload_of_its_executor(tmp_path: Path) -> None:
    local = AirflowStack(StackConfig(tmp_path / "a", tmp_path / "logs"), {})
    assert LOCAL_EXECUTOR_ENV.items() <= local.env.items() and CELERY_ENV.keys().isdisjoint(local.env)
    celery = StackConfig(tmp_path / "b", tmp_path / "logs", executor="CeleryExecutor", broker_url="redis://x",
                         result_backend="db+postgresql://x", workers=(CeleryWorker("w", ("default",)),))  # fmt: skip
    env = AirflowStack(celery, {}).env
    assert CELERY_ENV.items() <= env.items() and LOCAL_EXECUTOR_ENV.keys().isdisjoint(env)
