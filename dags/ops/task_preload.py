"""Airflow's workers import the nightly stages' libraries once, before they fork a process for each task.

Airflow runs every task try in a process forked from a worker: one of the LocalExecutor's worker processes, or a
Celery worker's pool process. Each task then imports what its stage needs: TensorFlow and Keras (train, evaluate,
bless, verify_serving), Great Expectations (ingest, validate), Feast (four stages), 3 to 9 s of CPU each in a
fresh process on a 2-core machine. Imported once in the process the workers are forked from, they come with every
fork:

- LocalExecutor (`make airflow`, `make demo`): the scheduler forks its workers from a forkserver that has imported
  `PRELOAD` (`LOCAL_EXECUTOR_ENV`: Airflow's `[scheduler] mp_start_method` and `mp_forkserver_preload`);
- CeleryExecutor (`docker/compose.yaml`): each worker imports them before it starts its pool (`CELERY_ENV`: the
  Celery configuration of `dags.ops.celery_config`, Celery's `imports`).

Only libraries: the project's own modules are read afresh by each task, so a changed stage takes effect at the
next task, as without this. `feature_repo` comes before `feast`: importing it turns typeguard's instrumentation of
Feast off. Importing these initialises no TensorFlow device, so a GPU is first touched by the task's process.
"""

from __future__ import annotations

PRELOAD = ("feature_repo", "feast", "great_expectations", "tensorflow", "keras")

# The LocalExecutor's worker processes run Airflow's `local_executor` module: the forkserver imports it too.
LOCAL_EXECUTOR_ENV = {
    "AIRFLOW__SCHEDULER__MP_START_METHOD": "forkserver",
    "AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD": ",".join(("airflow.executors.local_executor", *PRELOAD)),
}
CELERY_ENV = {"AIRFLOW__CELERY__CELERY_CONFIG_OPTIONS": "dags.ops.celery_config.CELERY_CONFIG"}
