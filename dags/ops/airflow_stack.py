"""Airflow 3.3 for real: its components as subprocesses of one isolated home, and a small REST API client.

`AirflowStack` starts `airflow api-server`, `scheduler`, `dag-processor` (and, when asked, `triggerer` and Celery
workers), waits until each one is healthy, and ends every process it started when it stops. Its workers fork
each task from a process that has imported the stages' libraries (`dags.ops.task_preload`). Each
component logs to its own file under `log_dir`, task logs go to `log_dir/tasks/`, so a failed run leaves
everything needed to read what happened.

Two shapes, chosen by `StackConfig`, not by code:
- LocalExecutor on the embedded SQLite metadata database (what a laptop runs);
- CeleryExecutor on Postgres with a Redis broker and one worker per queue set (what production runs).

Authentication is Airflow 3.3's default, the simple auth manager: user `admin` with the `admin` role, its
password in a passwords file this module writes. `python -m dags.ops.airflow_stack` starts the
LocalExecutor stack for a person to click through (`make airflow`) and runs until TERM, INT or HUP.

Stopping leaves no process behind, whatever signals arrive and whenever (`dags.ops.processes`): every
process the stack starts (components, one-shot commands like `airflow db migrate`) leads a session of its own;
the runner's handlers only record a signal (`StopSignals`) and the stack's waits raise `StopRequested` at the next
poll; `AirflowStack.stop` holds TERM, INT and HUP back while it TERMs each component's group and KILLs what is
left in its session; each component gets TERM when the runner dies, even by SIGKILL.

Importing this module does nothing. Celery workers import their `hostname_callable` from `dags.ops.hostname`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import secrets
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from dags.ops.airflow_client import AirflowClient
from dags.ops.hostname import worker_env
from dags.ops.processes import Component, Processes, StopRequested, StopSignals, free_port
from dags.ops.task_preload import CELERY_ENV, LOCAL_EXECUTOR_ENV

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
# The pools the project's DAGs use (`training`), imported into every metadata database the stack migrates.
POOLS_FILE = Path(__file__).resolve().parents[1] / "pools.json"


@dataclass(frozen=True)
class CeleryWorker:
    """One `airflow celery worker` process.

    Attributes:
        name: Celery node name (`<name>@<host>`) and the prefix of the task-instance hostname it records.
        queues: the queues it consumes.
        concurrency: task slots (prefork processes).
    """

    name: str
    queues: tuple[str, ...]
    concurrency: int = 1


@dataclass(frozen=True)
class StackConfig:
    """What to start and where.

    Attributes:
        airflow_home: `AIRFLOW_HOME` (config, SQLite database, passwords file).
        log_dir: component logs (`<component>.log`) and task logs (`tasks/`); kept after the stack stops.
        executor: `LocalExecutor` or `CeleryExecutor`.
        sql_alchemy_conn: metadata database URL; `None` is SQLite at `airflow_home/airflow.db`.
        broker_url: Celery broker (CeleryExecutor only).
        result_backend: Celery result backend, e.g. `db+postgresql://...` (CeleryExecutor only).
        broker_key_prefix: prefix of every broker key, so that stacks sharing a Redis never see each other's.
        workers: the Celery workers to start (CeleryExecutor only).
        api_host: address the API server (REST API and UI) binds to.
        api_port: its port; 0 picks a free one.
        admin_password: the admin's password; `None` keeps the one in the passwords file or generates one.
        use_job_schedule: `False` stops the scheduler from creating scheduled runs, so only triggered runs exist.
        triggerer: also start `airflow triggerer` (needed only by deferrable tasks).
        parallelism: task slots of the whole stack (the LocalExecutor starts this many worker processes).
    """

    airflow_home: Path
    log_dir: Path
    executor: str = "LocalExecutor"
    sql_alchemy_conn: str | None = None
    broker_url: str | None = None
    result_backend: str | None = None
    broker_key_prefix: str | None = None
    workers: tuple[CeleryWorker, ...] = ()
    api_host: str = "127.0.0.1"
    api_port: int = 0
    admin_password: str | None = None
    use_job_schedule: bool = False
    triggerer: bool = False
    parallelism: int = 4

    def __post_init__(self) -> None:
        if self.executor not in ("LocalExecutor", "CeleryExecutor"):
            raise ValueError(
                f"`executor` must be 'LocalExecutor' or 'CeleryExecutor'. Received: `executor={self.executor!r}`"
            )
        if self.executor == "CeleryExecutor" and not (self.broker_url and self.result_backend and self.workers):
            raise ValueError("The CeleryExecutor needs `broker_url`, `result_backend` and at least one worker")


class AirflowStack(AirflowClient):
    """Airflow's components for one home; a REST API client (`AirflowClient`) once started.

    Use as a context manager, so that whatever `start` managed to start is stopped:
    `with AirflowStack(config, env) as stack: stack.start(dag_ids=(...,))`.

    Args:
        config: what to start.
        base_env: the environment the components inherit (project paths, `DEEPFM_*`); Airflow settings
            derived from `config` override it.
        sleep: how the stack waits between polls; `StopSignals.sleep` makes every wait a point where a stop
            signal ends `start` (by `StopRequested`).
    """

    def __init__(
        self, config: StackConfig, base_env: Mapping[str, str], sleep: Callable[[float], None] = time.sleep
    ) -> None:
        self.config = config
        self.processes = Processes(config.log_dir, sleep)
        self.port = config.api_port or free_port()
        password = config.admin_password or self._existing_password() or secrets.token_urlsafe(12)
        super().__init__(f"http://{config.api_host}:{self.port}", ADMIN_USERNAME, password, sleep=sleep,
                         check_alive=self.processes.check_alive, where=f"; logs in {config.log_dir}")  # fmt: skip
        self.env = self._environment(base_env)

    # --- configuration -------------------------------------------------------------------------------------

    @property
    def passwords_file(self) -> Path:
        return self.config.airflow_home / "simple_auth_manager_passwords.json"

    @property
    def airflow_bin(self) -> str:
        return str(Path(sys.executable).parent / "airflow")

    def _existing_password(self) -> str | None:
        if self.passwords_file.exists():
            return json.loads(self.passwords_file.read_text()).get(ADMIN_USERNAME)
        return None

    def _environment(self, base_env: Mapping[str, str]) -> dict[str, str]:
        from cryptography.fernet import Fernet

        config = self.config
        env = {
            **base_env,
            "AIRFLOW_HOME": str(config.airflow_home),
            "AIRFLOW__CORE__EXECUTOR": config.executor,
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__PARALLELISM": str(config.parallelism),
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__CORE__FERNET_KEY": Fernet.generate_key().decode(),
            # Every process signs and checks the same tokens: the scheduler's task tokens, the API's user tokens.
            "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(32),
            "AIRFLOW__API__HOST": config.api_host,
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__BASE_URL": self.url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__CORE__AUTH_MANAGER": (
                "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
            ),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USERNAME}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.passwords_file),
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": str(config.use_job_schedule),
            "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
            # Default ports (8974, 8793, 8794) would collide with any other Airflow on this host.
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(config.log_dir / "tasks"),
        }
        env.update(LOCAL_EXECUTOR_ENV if config.executor == "LocalExecutor" else CELERY_ENV)
        if config.sql_alchemy_conn:
            env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = config.sql_alchemy_conn
        else:
            env.pop("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", None)
        if config.executor == "CeleryExecutor":
            env["AIRFLOW__CELERY__BROKER_URL"] = config.broker_url
            env["AIRFLOW__CELERY__RESULT_BACKEND"] = config.result_backend
            env["AIRFLOW__OPERATORS__DEFAULT_QUEUE"] = "default"
            if config.broker_key_prefix:
                env["AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__GLOBAL_KEYPREFIX"] = config.broker_key_prefix
        return env

    def _worker_env(self, worker: CeleryWorker) -> dict[str, str]:
        return {**self.env, **worker_env(worker.name), "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port())}

    # --- life cycle ----------------------------------------------------------------------------------------

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self, dag_ids: tuple[str, ...] = (), timeout: float = 300) -> None:
        """Migrate the database, start every component, and wait until they are healthy and `dag_ids` parsed."""
        self.config.airflow_home.mkdir(parents=True, exist_ok=True)
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        self.passwords_file.write_text(json.dumps({ADMIN_USERNAME: self.password}) + "\n")
        self._run_to_log("db-migrate", ["db", "migrate"], timeout=600)
        self._run_to_log("pools-import", ["pools", "import", str(POOLS_FILE)], timeout=300)

        deadline = time.monotonic() + timeout
        api = ["api-server", "--host", self.config.api_host, "--port", str(self.port), "--workers", "1"]
        self._spawn("api-server", api)
        self._spawn("scheduler", ["scheduler"])
        self._spawn("dag-processor", ["dag-processor"])
        if self.config.triggerer:
            self._spawn("triggerer", ["triggerer"])
        for worker in self.config.workers:
            command = ["celery", "worker", "--queues", ",".join(worker.queues),
                       "--concurrency", str(worker.concurrency), "--celery-hostname", f"{worker.name}@%h"]  # fmt: skip
            self._spawn(f"worker-{worker.name}", command, env=self._worker_env(worker))

        wanted = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if self.config.triggerer else [])
        self.wait_healthy(wanted, deadline)
        for worker in self.config.workers:
            self.processes.wait_for_log(f"worker-{worker.name}", f"{worker.name}@", " ready.", deadline=deadline)
        for dag_id in dag_ids:
            self.wait_for_dag(dag_id, deadline)

    def stop(self, grace: float = 20) -> None:
        """Stop every process the stack started and every process they started; safe to call again.

        TERM goes to each component's process group; once the component has exited, or after `grace` seconds,
        whatever is left in its session is killed. TERM, INT and HUP are held back until it is done.
        """
        self.processes.stop(grace)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> Component:
        return self.processes.spawn(name, [self.airflow_bin, *args], env or self.env)

    def _run_to_log(self, name: str, args: list[str], timeout: float) -> None:
        """Run a one-shot `airflow` command like a component, so that `stop` ends it too if a wait is cut short."""
        self.processes.run(name, [self.airflow_bin, *args], self.env, timeout)


def main(argv: list[str] | None = None) -> None:
    """`make airflow`: the LocalExecutor/SQLite stack on the project's own home, until TERM, INT or HUP."""
    with StopSignals() as stop_signals:
        try:
            _serve(argv, stop_signals)
        except StopRequested as stop:
            logger.info("%s: every Airflow process has stopped", stop.signum.name)
            _die_by(stop.signum)


def _serve(argv: list[str] | None, stop_signals: StopSignals) -> None:
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--airflow-home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", "airflow_home")))
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--scheduled-runs",
        action="store_true",
        help="let the scheduler create the DAGs' scheduled runs (off: MovieLens ends in 1998, so tonight's run "
        "would retrain on the same data, and it would overlap a backfill's runs, which share the Feast sources)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    home = args.airflow_home.resolve()
    config = StackConfig(airflow_home=home, log_dir=home / "logs" / "components", api_host=args.host,
                         api_port=args.port, use_job_schedule=args.scheduled_runs, triggerer=True)  # fmt: skip
    with AirflowStack(config, os.environ, sleep=stop_signals.sleep) as stack:
        stack.start(dag_ids=("deepfm_nightly",))
        print(
            f"\nAirflow UI: {stack.url}\n  user: {ADMIN_USERNAME}\n  password: {stack.password}"
            f"  (kept in {stack.passwords_file})\n  component logs: {config.log_dir}\nCtrl-C stops everything.\n",
            flush=True,
        )
        while True:
            stack.processes.check_alive()
            stop_signals.sleep(5)


def _die_by(signum: signal.Signals) -> None:
    """End this process by `signum`'s default action, which tells a shell or `make` that it was stopped."""
    with contextlib.suppress(OSError):  # a closed terminal
        sys.stdout.flush()
        sys.stderr.flush()
    signal.signal(signum, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signum})
    os.kill(os.getpid(), signum)


if __name__ == "__main__":
    main()
