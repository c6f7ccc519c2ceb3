"""The Celery configuration of the project's Airflow workers (`[celery] celery_config_options`, set by
`dags.ops.task_preload.CELERY_ENV`): Airflow's own, plus the libraries each worker imports before it starts its
pool, so that every task process forked from it has them (`dags.ops.task_preload`)."""

from __future__ import annotations

from airflow.providers.celery.executors.default_celery import DEFAULT_CELERY_CONFIG

from dags.ops.task_preload import PRELOAD

CELERY_CONFIG = {**DEFAULT_CELERY_CONFIG, "imports": PRELOAD}
