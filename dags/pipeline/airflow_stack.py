"""Airflow 3.3 for real: its components as subprocesses of one isolated home, and a small REST API client.

`AirflowStack` starts `airflow api-server`, `scheduler`, `dag-processor` (and, when asked, `triggerer` and Celery
workers), waits until each one is healthy, and ends every process it started when it stops. Each
component logs to its own file under `log_dir`, task logs go to `log_dir/tasks/`, so a failed run leaves
everything needed to read what happened.

Two shapes, chosen by `StackConfig`, not by code:
- LocalExecutor on the embedded SQLite metadata database (what a laptop runs);
- CeleryExecutor on Postgres with a Redis broker and one worker per queue set (what production runs).

Authentication is Airflow 3.3's default, the simple auth manager: user `admin` with the `admin` role, its
password in a passwords file this module writes. `python -m dags.pipeline.airflow_stack` starts the
LocalExecutor stack for a person to click through (`make airflow`) and runs until TERM, INT or HUP.

Stopping leaves no process behind, whatever signals arrive and whenever:
- every process the stack starts (components, one-shot commands like `airflow db migrate`) leads a session of its
  own, so a signal to the runner's process group (Ctrl-C, a closed terminal, `make`, a service manager) reaches
  the runner alone;
- the runner's handlers only record a signal (`StopSignals`); the stack's waits raise `StopRequested` at the next
  poll, so no signal cuts a start or a clean-up in half, and the second and later ones change nothing;
- `AirflowStack.stop` runs with TERM, INT and HUP held back (for callers whose handlers raise, like Ctrl-C under
  pytest); it sends TERM to each component's process group and, once the component has exited or after a grace,
  KILLs whatever is left in its session (task processes make process groups of their own, not sessions);
- on Linux, each component also gets TERM when the runner dies, even by SIGKILL (`PR_SET_PDEATHSIG`).

Importing this module does nothing. Celery workers import their `hostname_callable` from `dags.pipeline.hostname`.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

from dags.pipeline.hostname import WORKER_NAME_ENV, worker_hostname

logger = logging.getLogger(__name__)

ADMIN_USERNAME = "admin"
# The pools the project's DAGs use (`training`), imported into every metadata database the stack migrates.
POOLS_FILE = Path(__file__).resolve().parents[1] / "pools.json"
TERMINAL_RUN_STATES = {"success", "failed"}
# What a person, a terminal or a service manager sends to stop the runner.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


class StackError(RuntimeError):
    """A component did not start, or stopped; the message names its log file."""


class StopRequested(Exception):  # noqa: N818 (a request, not an error)
    """A stop signal arrived; raised by `StopSignals.sleep`, never from inside a signal handler."""

    def __init__(self, signum: signal.Signals) -> None:
        super().__init__(f"received {signum.name}")
        self.signum = signum


class StopSignals:
    """TERM, INT and HUP as a request to stop, acted on where the program waits.

    While installed (a context manager), its handlers only record a signal, so one arriving while a process is
    being started or stopped cannot leave that process unrecorded or its clean-up half done. `sleep` raises
    `StopRequested` once a signal has arrived.
    """

    def __init__(self) -> None:
        self.received: list[signal.Signals] = []
        self._previous: dict[signal.Signals, Any] = {}

    def __enter__(self) -> Self:
        for signum in STOP_SIGNALS:
            self._previous[signum] = signal.signal(signum, self._record)
        return self

    def __exit__(self, *_exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _record(self, signum: int, _frame: object) -> None:
        self.received.append(signal.Signals(signum))

    def sleep(self, seconds: float) -> None:
        """`time.sleep`, cut short by a stop signal: raises `StopRequested` if one arrived before or during it."""
        deadline = time.monotonic() + seconds
        while not self.received:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(left, 0.1))
        raise StopRequested(self.received[0])


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


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


@dataclass
class _Component:
    name: str
    process: subprocess.Popen
    log_path: Path
    log_file: IO[str] = field(repr=False)


class AirflowStack:
    """Airflow's components for one home; a REST API client once started.

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
        self._sleep = sleep
        self.port = config.api_port or free_port()
        self.url = f"http://{config.api_host}:{self.port}"
        self.password = config.admin_password or self._existing_password() or secrets.token_urlsafe(12)
        self.env = self._environment(base_env)
        self._components: list[_Component] = []
        self._token: str | None = None

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
        return {
            **self.env,
            WORKER_NAME_ENV: worker.name,
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{worker_hostname.__module__}.{worker_hostname.__name__}",
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        }

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

        self._wait_healthy(deadline)
        for worker in self.config.workers:
            self._wait_for_log(f"worker-{worker.name}", f"{worker.name}@", " ready.", deadline=deadline)
        for dag_id in dag_ids:
            self._wait_for_dag(dag_id, deadline)

    def stop(self, grace: float = 20) -> None:
        """Stop every process the stack started and every process they started; safe to call again.

        TERM goes to each component's process group; once the component has exited, or after `grace` seconds,
        whatever is left in its session is killed. TERM, INT and HUP are held back until it is done.
        """
        self._stop(list(self._components), grace)

    def _stop(self, components: list[_Component], grace: float) -> None:
        with _signals_held(STOP_SIGNALS):
            for component in components:
                if not _exited(component.process):
                    _signal_group(component.process, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for component in reversed(components):
                while not _exited(component.process) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _exited(component.process):
                    logger.warning("%s ignored SIGTERM for %s s; killing it", component.name, grace)
                _kill_session(component.process)
                component.process.wait()
                component.log_file.close()
                self._components.remove(component)

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str] | None = None) -> _Component:
        log_path = self.config.log_dir / f"{name}.log"
        log_file = log_path.open("a")
        try:
            process = subprocess.Popen(
                [self.airflow_bin, *args], env=dict(env or self.env), stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_parent_death_signal(),
            )  # fmt: skip
        except BaseException:
            log_file.close()
            raise
        component = _Component(name, process, log_path, log_file)
        self._components.append(component)
        logger.info("started %s (pid %s), log %s", name, process.pid, log_path)
        return component

    def _run_to_log(self, name: str, args: list[str], timeout: float) -> None:
        """Run a one-shot `airflow` command like a component, so that `stop` ends it too if a wait is cut short."""
        component = self._spawn(name, args)
        deadline = time.monotonic() + timeout
        while not _exited(component.process):
            if time.monotonic() > deadline:
                raise StackError(f"`airflow {' '.join(args)}` ran over {timeout} s; log {component.log_path}")
            self._sleep(0.2)
        self._stop([component], grace=0)
        if component.process.returncode != 0:
            raise StackError(
                f"`airflow {' '.join(args)}` exited {component.process.returncode}:\n{_tail(component.log_path)}"
            )

    def _check_alive(self) -> None:
        for component in self._components:
            if component.process.poll() is not None:
                raise StackError(
                    f"{component.name} exited with {component.process.returncode}; log {component.log_path}:\n"
                    f"{_tail(component.log_path)}"
                )

    def _wait(self, what: str, ready: Any, deadline: float, interval: float = 2) -> Any:
        while True:
            self._check_alive()
            result = ready()
            if result:
                return result
            if time.monotonic() > deadline:
                raise StackError(f"timed out waiting for {what}; logs in {self.config.log_dir}")
            self._sleep(interval)

    def _wait_healthy(self, deadline: float) -> None:
        import httpx

        wanted = ["metadatabase", "scheduler", "dag_processor"] + (["triggerer"] if self.config.triggerer else [])

        def healthy() -> bool:
            try:
                health = httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
            except (httpx.HTTPError, ValueError):
                return False
            return all((health.get(part) or {}).get("status") == "healthy" for part in wanted)

        self._wait("the API server, scheduler and DAG processor to report healthy", healthy, deadline)

    def _wait_for_log(self, name: str, *fragments: str, deadline: float) -> None:
        log_path = self.config.log_dir / f"{name}.log"

        def logged() -> bool:
            return any(all(part in line for part in fragments) for line in log_path.read_text().splitlines())

        self._wait(f"{name} to log {' … '.join(fragments)!r}", logged, deadline)

    def _wait_for_dag(self, dag_id: str, deadline: float) -> None:
        def parsed() -> bool:
            if self.request("GET", f"/api/v2/dags/{dag_id}", check=False).status_code == 200:
                return True
            errors = self.request("GET", "/api/v2/importErrors").json()["import_errors"]
            if errors:
                raise StackError(f"DAG files failed to import: {json.dumps(errors, indent=2)}")
            return False

        self._wait(f"DAG {dag_id} to be parsed", parsed, deadline)

    # --- REST API ------------------------------------------------------------------------------------------

    def token(self) -> str:
        """A JWT for the admin from `POST /auth/token` (cached)."""
        import httpx

        if self._token is None:
            response = httpx.post(f"{self.url}/auth/token", timeout=30,
                                  json={"username": ADMIN_USERNAME, "password": self.password})  # fmt: skip
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, check: bool = True, **kwargs: Any):
        """Call the REST API as the admin; raises on an error status unless `check=False`."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token()}"}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        if check and response.is_error:
            raise StackError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, run_id: str | None = None) -> dict:
        """Create a DagRun through `POST /api/v2/dags/{dag_id}/dagRuns`; returns the run."""
        body = {"logical_date": logical_date, **({"dag_run_id": run_id} if run_id else {})}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, interval: float = 10) -> dict:
        """Poll the DagRun until it succeeds or fails; returns it. Logs each task's state as it changes."""
        deadline = time.monotonic() + timeout
        seen: dict[str, str | None] = {}

        def finished() -> dict | None:
            for ti in self.task_instances(dag_id, run_id):
                if seen.get(ti["task_id"]) != ti["state"]:
                    seen[ti["task_id"]] = ti["state"]
                    logger.info("%s.%s: %s", run_id, ti["task_id"], ti["state"])
            run = self.dag_run(dag_id, run_id)
            return run if run["state"] in TERMINAL_RUN_STATES else None

        return self._wait(f"DagRun {dag_id}/{run_id} to finish", finished, deadline, interval)

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.request("GET", path, params={"limit": 100}).json()["task_instances"]


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, sig)


def _exited(process: subprocess.Popen) -> bool:
    """Whether the process has exited, without reaping it: until it is reaped, its pid (its process group and
    session id) cannot name another process."""
    if process.returncode is not None or not hasattr(os, "waitid"):  # no `waitid` (macOS): poll, which reaps
        return process.poll() is not None
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:
        return True


def _session_members(session_id: int) -> list[int]:
    """The live processes (zombies aside) of a session, read from Linux's `/proc`; none where there is no `/proc`."""
    members = []
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            # `pid (comm) state ppid pgrp session ...`; comm may hold spaces and parentheses.
            state, _ppid, _pgrp, session = (entry / "stat").read_text().rpartition(")")[2].split()[:4]
        except (OSError, ValueError):
            continue
        if int(session) == session_id and state != "Z":
            members.append(int(entry.name))
    return members


def _kill_session(process: subprocess.Popen) -> None:
    """SIGKILL the process's group and whatever is left in its session (it leads both, so its pid is their id)."""
    _signal_group(process, signal.SIGKILL)
    for _ in range(100):  # a member may fork while the others are killed
        members = _session_members(process.pid)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    logger.warning("processes %s of session %s survived SIGKILL", members, process.pid)


@contextlib.contextmanager
def _signals_held(signals: tuple[signal.Signals, ...]) -> Iterator[None]:
    """Block `signals` in this thread until the block ends (then they are delivered), so that a handler that
    raises cannot cut a clean-up short."""
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, signals)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def _parent_death_signal() -> Callable[[], None] | None:
    """A `preexec_fn` after which Linux sends the child TERM when the thread that started it ends, even by SIGKILL;
    `None` elsewhere."""
    if sys.platform != "linux":
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def set_parent_death_signal() -> None:
        prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before prctl: no signal would come
            os._exit(1)

    return set_parent_death_signal


def _tail(path: Path, lines: int = 40) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


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
            stack._check_alive()
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
