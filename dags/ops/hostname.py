"""The task-instance hostname of a Celery worker, imported by every worker process as `[core] hostname_callable`.

Kept apart from `dags.ops.airflow_stack` so that a worker imports only the standard library for it.
"""

from __future__ import annotations

import os
import socket

# The environment variable a Celery worker's processes read their worker name from.
WORKER_NAME_ENV = "DEEPFM_AIRFLOW_WORKER_NAME"


def worker_hostname() -> str:
    """Task-instance hostname of a Celery worker: `<worker name>@<fqdn>`, so two workers on one host differ.

    Set as `[core] hostname_callable` in the workers' environment only.
    """
    fqdn = socket.getfqdn()
    name = os.environ.get(WORKER_NAME_ENV)
    return f"{name}@{fqdn}" if name else fqdn


def worker_env(name: str) -> dict[str, str]:
    """The environment that makes the task instances a Celery worker runs record `<name>@<fqdn>` as hostname."""
    return {WORKER_NAME_ENV: name, "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.{worker_hostname.__name__}"}
