"""docker/compose.yaml's topology as processes on this machine, run by the compose file's own commands and environment.

Each service's command, environment, volumes, ports, start order (`depends_on`) and health checks are read from
the compose file (`tests/deploy/compose.py`), so that the file and the deploy test cannot drift apart. What stands
in here for what a container has:

| compose | here |
| --- | --- |
| `postgres`, `redis` | the servers already running (`tests/services.py`); compose's databases (`airflow`, `feast`) become databases of this run's own, Celery's Redis database one of its own (with a key prefix) |
| service hostnames (`postgres`, `redis`, `airflow-api-server`, `tf-serving`) | 127.0.0.1 and each service's local ports |
| a container's own network | fresh ports for what it listens on: its published ports, its health check's, Airflow's defaults (8974, 8793, 8794) |
| a container's own hostname | its service name: the Celery node `<service>@<host>`, task instances' hostname via `dags.ops.hostname` |
| a container's file system | `<root>/containers/<service>/`; its mounts are links there to the volume folders |
| named volumes | `<root>/volumes/<name>/` (`airflow-logs` under the kept log folder) |
| bind mounts | their sources in the checkout; a file that names container paths, a copy with them mapped |
| the image's `ENV` (its Dockerfile) and code | the same variables, the image's folders mapped: /opt/deepfm the checkout, /opt/venv this venv, /opt/kernels the kernels built here |
| entrypoint `airflow` | this venv's `airflow` |
| entrypoint `deepfm-airflow-init` (`docker/airflow-init.sh`) | its step as the airflow user, `python -m dags.ops.deploy_init` (the `chown` before it has no use here) |
| `tf-serving` (`tensorflow_model_server`) | `replicas` `python -m serving.server` processes, each with compose's flags |
| `spark-master`, `spark-worker` (`spark-class`: the official image's, the project image's) | `spark-class` of this venv's pyspark distribution, with compose's command; `deploy.replicas` workers |
| a container's ports (`expose`) | fresh ports, one per replica |

Health checks: the HTTP ones (API server, scheduler, TF Serving's REST port) are made as compose makes them; for
those that run a command in the container (`airflow jobs check`, `celery inspect ping`) the API server's health
report and the worker's `ready.` line stand in, which say the same without starting an Airflow interpreter each.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dags.ops.airflow_client import AirflowClient
from dags.ops.hostname import worker_env
from dags.ops.processes import Component, Processes, StackError, free_port, kill_session, session_members
from tests import compose as cf

PROJECT_ROOT = cf.PROJECT_ROOT
EXTERNAL = ("postgres", "redis")  # the servers already running here
SERVING = "tf-serving"
SPARK_MASTER = "spark-master"
INIT_SCRIPT = PROJECT_ROOT / "docker" / "airflow-init.sh"
INIT_MODULE = "dags.ops.deploy_init"
# Where this checkout has what the Airflow images hold.
IMAGE_PATHS = {
    "/opt/deepfm": PROJECT_ROOT,
    "/opt/venv": Path(sys.prefix),
    "/opt/kernels": PROJECT_ROOT / "deepfm_model" / "kernels" / "_build",
}
SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"  # a base image's `$PATH`: this machine's tools
# Ports an Airflow container listens on by default, by the setting that moves each.
AIRFLOW_PORTS = {
    8080: "AIRFLOW__API__PORT",
    8974: "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
    8793: "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
    8794: "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
}
# What stands in for a health check that runs a command inside the container: the part of the API server's
# health report it checks.
HEALTH_REPORT_PART = {"DagProcessorJob": "dag_processor", "TriggererJob": "triggerer"}
_POSTGRES_URL = re.compile(r"(?P<scheme>[\w+]+)://[^:@/\s]+(?::[^@/\s]*)?@postgres:(?P<port>\d+)/(?P<database>\w+)")
_REDIS_URL = re.compile(r"redis://redis:(?P<port>\d+)/(?P<db>\d+)")
_HOST_PORT = re.compile(r"(?<![\w.-])(?P<host>[a-z][\w-]*):(?P<port>\d+)\b")


@dataclass(frozen=True)
class LocalServices:
    """The Postgres and Redis that stand in for compose's, and the names this run takes on them.

    Attributes:
        postgres: host, port, user (and password) of the local server.
        databases: compose's database name -> this run's.
        redis: (host, port) of the local server.
        redis_databases: compose's Redis database number -> this run's (one not listed stays as it is).
        celery_key_prefix: prefix of every Celery key, so that runs sharing a Redis database never meet.
    """

    postgres: Mapping[str, Any]
    databases: Mapping[str, str]
    redis: tuple[str, int]
    redis_databases: Mapping[int, int]
    celery_key_prefix: str


class ComposeTopology:
    """The services of a compose file, started here in `depends_on` order; a context manager that stops them all.

    Args:
        compose: the interpolated compose file (`compose.load_compose`).
        root: a fresh folder for the containers' file systems and the volumes.
        log_dir: where each process logs (`<service>.log`) and the `airflow-logs` volume lives; kept.
        local: the services standing in for `postgres` and `redis`.
        overrides: variables the run sets in every Airflow service beyond compose's (its own Feast project,
            fewer epochs, ...).
        replicas: how many `tf-serving` processes.
        sleep: how waits pause.
    """

    def __init__(
        self,
        compose: Mapping[str, Any],
        root: Path,
        log_dir: Path,
        local: LocalServices,
        overrides: Mapping[str, str] = {},  # noqa: B006 (read only)
        replicas: int = 2,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.services: dict[str, dict[str, Any]] = compose["services"]
        self.root = root
        self.log_dir = log_dir
        self.local = local
        self.overrides = dict(overrides)
        self.replicas = replicas
        self.processes = Processes(log_dir, sleep)
        self._volumes = {
            name: log_dir / name if name == "airflow-logs" else root / "volumes" / name
            for name in compose.get("volumes") or {}
        }
        self._ports = self._local_ports()
        self._bind_copies: dict[Path, Path] = {}
        self._healthy: set[str] = set()
        init = self.service_env("airflow-init")  # the admin user and password it writes into the passwords file
        self.client = AirflowClient(
            self.api_url, init["AIRFLOW_ADMIN_USERNAME"], init["AIRFLOW_ADMIN_PASSWORD"], sleep=sleep,
            check_alive=self.processes.check_alive, where=f"; logs in {log_dir}",
        )  # fmt: skip

    def __enter__(self) -> ComposeTopology:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.processes.stop()

    # --- where things are -----------------------------------------------------------------------------------

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.local_port('airflow-api-server', 8080)}"

    def local_port(self, service: str, port: int, replica: int = 0) -> int:
        """The port here of `service`'s container port `port` (of replica `replica`)."""
        return self._ports[(service, port)][replica]

    def volume(self, name: str) -> Path:
        """The folder that stands in for compose's named volume `name`."""
        return self._volumes[name]

    @property
    def serving_addresses(self) -> list[str]:
        """gRPC address of each `tf-serving` replica."""
        return [f"127.0.0.1:{port}" for port in self._ports[(SERVING, self._serving_grpc_port())]]

    @property
    def spark_master_url(self) -> str:
        """The URL a Spark driver submits to (compose's `spark://spark-master:7077`)."""
        return f"spark://127.0.0.1:{self.local_port(SPARK_MASTER, 7077)}"

    def spark_status(self) -> dict[str, Any]:
        """The Spark master's status page (`/json/`): its workers and their state, the applications it ran."""
        import httpx

        return httpx.get(f"http://127.0.0.1:{self.local_port(SPARK_MASTER, 8080)}/json/", timeout=10).json()

    def _serving_grpc_port(self) -> int:
        flags = dict(w.removeprefix("--").split("=", 1) for w in cf.as_list(self.services[SERVING]["command"]))
        return int(flags["port"])

    def _local_ports(self) -> dict[tuple[str, int], list[int]]:
        """(service, container port) -> its local port, one per replica."""
        ports: dict[tuple[str, int], list[int]] = {}
        for name, service in self.services.items():
            if name in EXTERNAL:
                continue
            own = set(cf.published_ports(service)) | {int(port) for port in service.get("expose") or ()}
            own |= {int(p) for p in re.findall(r"localhost:(\d+)", " ".join(_health_words(service)))}
            if _is_airflow(service):  # 8080 only where published: the API server
                own |= {port for port in AIRFLOW_PORTS if port != 8080}
            count = self.replica_count(name)
            for port in sorted(own):
                ports[(name, port)] = [free_port() for _ in range(count)]
        return ports

    def container_path(self, service: str, path: str) -> Path:
        """Where `path` in `service`'s container is here: a mount's folder, the image's code, else its own."""
        for mount in sorted(self._mounts(service), key=lambda m: -len(m["target"])):
            if _under(path, mount["target"]):
                return Path(self._mount_source(mount)) / path[len(mount["target"]) :].lstrip("/")
        if _is_built(self.services[service]) and not self._any_mount_covers(path):
            for target, local in IMAGE_PATHS.items():
                if _under(path, target):
                    return local / path[len(target) :].lstrip("/")
        return self.root / "containers" / service / path.lstrip("/")

    def _any_mount_covers(self, path: str) -> bool:
        """A folder some service mounts: in an image it is an empty folder, not the code."""
        return any(_under(path, m["target"]) for s in self.services for m in self._mounts(s))

    def _mounts(self, service: str) -> list[dict[str, Any]]:
        return cf.volumes(self.services[service])

    def _mount_source(self, mount: Mapping[str, Any]) -> Path:
        if mount["type"] != "bind":
            return self._volumes[mount["source"]]
        source = (cf.COMPOSE_FILE.parent / mount["source"]).resolve()
        if source not in self._bind_copies:
            text = source.read_text() if source.is_file() else ""
            quoted = re.compile(r'"(/[^"]*)"')
            if any(self._any_mount_covers(path) for path in quoted.findall(text)):
                # A file that names container paths (serving/models.config: the model's base path under /models).
                copy = self.root / "binds" / source.name
                copy.parent.mkdir(parents=True, exist_ok=True)
                copy.write_text(quoted.sub(lambda m: f'"{self._mapped_if_mounted(m.group(1))}"', text))
                self._bind_copies[source] = copy
            else:
                self._bind_copies[source] = source
        return self._bind_copies[source]

    def _mapped_if_mounted(self, path: str) -> str:
        """A path under a mount, as the service that mounts it sees it; any other path as it is."""
        for service in self.services:
            if any(_under(path, m["target"]) for m in self._mounts(service)):
                return str(self.container_path(service, path))
        return path

    # --- environment and commands --------------------------------------------------------------------------

    def localize(self, value: str, service: str, replica: int = 0) -> str:
        """A compose value as `service` sees it here: hosts, ports, databases and container paths mapped."""
        postgres, databases = self.local.postgres, self.local.databases

        def postgres_url(match: re.Match[str]) -> str:
            password = f":{postgres['password']}" if postgres.get("password") else ""
            return (f"{match['scheme']}://{postgres['user']}{password}@{postgres['host']}:{postgres['port']}/"
                    f"{databases[match['database']]}")  # fmt: skip

        def redis_url(match: re.Match[str]) -> str:
            db = self.local.redis_databases.get(int(match["db"]), int(match["db"]))
            return f"redis://{self.local.redis[0]}:{self.local.redis[1]}/{db}"

        def address(match: re.Match[str]) -> str:
            host, port = match["host"], int(match["port"])
            if host == "redis":
                return f"{self.local.redis[0]}:{self.local.redis[1]}"
            if host == "localhost":
                return f"127.0.0.1:{self._ports[(service, port)][replica]}"
            if (host, port) in self._ports:
                return ",".join(f"127.0.0.1:{p}" for p in self._ports[(host, port)])
            return match[0]

        value = _REDIS_URL.sub(redis_url, _POSTGRES_URL.sub(postgres_url, value))
        value = _HOST_PORT.sub(address, value)
        flag, equals, path = value.rpartition("=") if value.startswith("--") else ("", "", value)
        if path.startswith("/"):
            path = str(self.container_path(service, path))
        return f"{flag}{equals}{path}"

    def service_env(self, service: str) -> dict[str, str]:
        """The environment of `service`'s process: its image's `ENV`, compose's `environment`, its own ports."""
        spec = self.services[service]
        home = self.container_path(service, "/home/airflow")
        env = {"PATH": SYSTEM_PATH, "HOME": str(home), "LANG": "C.UTF-8"}
        if _is_built(spec):
            dockerfile = cf.COMPOSE_FILE.parent / spec["build"]["context"] / spec["build"]["dockerfile"]
            for name, value in cf.dockerfile_env(dockerfile).items():
                if name == "PATH":  # the image's folders, then the base image's `$PATH` (this machine's)
                    added = [self.localize(part, service) for part in value.split(":") if part.startswith("/")]
                    env[name] = ":".join([*added, env["PATH"]])
                else:
                    env[name] = self.localize(value, service)
        else:  # the serving and Spark master stand-ins run from the checkout, in this venv
            env.update({"PATH": f"{Path(sys.executable).parent}:{SYSTEM_PATH}", "PYTHONPATH": str(PROJECT_ROOT),
                        "TF_CPP_MIN_LOG_LEVEL": "2"})  # fmt: skip
        env.update({name: self.localize(value, service) for name, value in cf.environment(spec).items()})
        if _is_airflow(spec):
            for port, setting in AIRFLOW_PORTS.items():
                if (service, port) in self._ports:
                    env[setting] = str(self._ports[(service, port)][0])
            if (service, 8080) in self._ports:
                env["AIRFLOW__API__HOST"] = "127.0.0.1"  # where compose publishes it
            if _is_worker(spec):
                env.update(worker_env(service))
            env.update(self.overrides)
        return env

    def command(self, service: str, replica: int = 0) -> list[str]:
        """`service`'s entrypoint and command, as this machine runs them."""
        spec = self.services[service]
        entrypoint = cf.as_list(spec.get("entrypoint")) or ["airflow"]  # the Airflow images' ENTRYPOINT
        words = [self.localize(word, service, replica) for word in cf.as_list(spec.get("command"))]
        own = {port: local[replica] for (name, port), local in self._ports.items() if name == service}
        if entrypoint == ["tensorflow_model_server"]:
            words = [re.sub(r"=(\d+)$", lambda m: f"={own.get(int(m[1]), m[1])}", w) for w in words]
            return [sys.executable, "-m", "serving.server", *words]
        if _is_spark(spec):  # a service's own hostname and ports (`--host spark-master --port 7077`) mapped
            words = ["127.0.0.1" if w in self.services else str(own.get(int(w), w)) if w.isdigit() else w
                     for w in words]  # fmt: skip
            return [str(Path(sys.executable).parent / "spark-class"), *words]
        if entrypoint == ["/usr/local/bin/deepfm-airflow-init"]:
            if f"python -m {INIT_MODULE}" not in INIT_SCRIPT.read_text():
                raise StackError(f"{INIT_SCRIPT} no longer runs `python -m {INIT_MODULE}`: update the deploy test")
            return [sys.executable, "-m", INIT_MODULE]
        if entrypoint != ["airflow"]:
            raise StackError(f"{service}: no local stand-in for entrypoint {entrypoint}")
        if words[:2] == ["celery", "worker"]:
            words += ["--celery-hostname", f"{service}@%h"]  # a container's own hostname
        return [str(Path(sys.executable).parent / "airflow"), *words]

    # --- life cycle ----------------------------------------------------------------------------------------

    def start(self, dag_ids: tuple[str, ...] = (), timeout: float = 300, services: tuple[str, ...] = ()) -> None:
        """Start every service (or `services` and what they depend on) after its `depends_on` conditions hold; wait
        until all are healthy and `dag_ids` parsed."""
        self.root.mkdir(parents=True, exist_ok=True)
        for folder in self._volumes.values():
            folder.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout
        order = _start_order(self.services, services or tuple(self.services))
        for name in order:
            for dependency, condition in (self.services[name].get("depends_on") or {}).items():
                if condition["condition"] == "service_healthy":
                    self._wait_healthy(dependency, deadline)
            self._start(name)
        for name in order:
            if self.services[name].get("healthcheck"):
                self._wait_healthy(name, deadline)
        for dag_id in dag_ids:
            self.client.wait_for_dag(dag_id, deadline)

    def _start(self, service: str) -> None:
        self._mount(service)
        if str(self.services[service].get("restart", "")) == "no":  # one-shot: the others wait for it to finish
            env = self.service_env(service)
            self.processes.run(service, self.command(service), env, timeout=600, cwd=PROJECT_ROOT)
            return
        for replica in range(self.replica_count(service)):
            self.start_replica(service, replica)

    def replica_count(self, service: str) -> int:
        """How many processes `service` runs: `replicas` of `tf-serving`, compose's `deploy.replicas` of others."""
        if service == SERVING:
            return self.replicas
        return int((self.services[service].get("deploy") or {}).get("replicas", 1))

    def process_name(self, service: str, replica: int = 0) -> str:
        """The name `service`'s process (replica `replica` of a replicated service) runs and logs under."""
        return f"{service}-{replica + 1}" if self.replica_count(service) > 1 else service

    def start_replica(self, service: str, replica: int = 0) -> Component:
        """Start one process of `service` (again, after `kill`), as compose would start its container."""
        name = self.process_name(service, replica)
        return self.processes.spawn(name, self.command(service, replica), self.service_env(service), cwd=PROJECT_ROOT)

    def kill(self, service: str, replica: int = 0) -> None:
        """`docker kill`: SIGKILL to every process of the service's container (its session), nothing graceful."""
        component = self._component(service, replica)
        kill_session(component.process.pid)
        self.processes.stop(grace=0, components=[component])

    def pause(self, service: str, replica: int = 0, resume: bool = False) -> None:
        """`docker pause` (`resume`: `docker unpause`): SIGSTOP (SIGCONT) to every process of the service's container,
        which then holds whatever it was doing, reports nothing and answers nothing."""
        for pid in session_members(self._component(service, replica).process.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT if resume else signal.SIGSTOP)

    def _component(self, service: str, replica: int) -> Component:
        name = self.process_name(service, replica)
        (component,) = [c for c in self.processes.components if c.name == name]
        return component

    def _mount(self, service: str) -> None:
        """Each mount of the service as a link in its container's folder (Airflow finds its logs under its home)."""
        for mount in self._mounts(service):
            link = self.root / "containers" / service / mount["target"].lstrip("/")
            if not link.is_symlink():
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(self._mount_source(mount))

    def _wait_healthy(self, service: str, deadline: float) -> None:
        if service not in self._healthy:
            self.processes.wait(f"{service} to be healthy", lambda: self._is_healthy(service), deadline, interval=1)
            self._healthy.add(service)

    def _is_healthy(self, service: str) -> bool:
        import httpx

        if service in EXTERNAL:
            return True  # the fixture that provided them checked them
        words = _health_words(self.services[service])
        script = " ".join(words)
        urls = [self.localize(w, service) for w in words if w.startswith("http://")]
        requests = re.findall(r"/dev/tcp/127\.0\.0\.1/(\d+) .*GET (\S+) HTTP", script)
        if requests:  # TF Serving's: any HTTP answer of the REST port, on every replica
            port, path = int(requests[0][0]), requests[0][1]
            urls = [f"http://127.0.0.1:{local}{path}" for local in self._ports[(service, port)]]
        if urls:
            try:
                answers = [httpx.get(url, timeout=5) for url in urls]
            except httpx.HTTPError:
                return False
            return requests != [] or all(answer.status_code < 400 for answer in answers)
        job = re.search(r"--job-type (\w+)", script)
        if job:
            part = HEALTH_REPORT_PART[job[1]]
            return (self.client.health().get(part) or {}).get("status") == "healthy"
        if "celery" in script and "ping" in script:
            log = self.log_dir / f"{service}.log"
            lines = log.read_text(errors="replace").splitlines() if log.exists() else []
            return any(f"{service}@" in line and " ready." in line for line in lines)
        raise StackError(f"{service}: no local stand-in for its health check {words}")


def _health_words(service: Mapping[str, Any]) -> list[str]:
    return [str(w) for w in ((service.get("healthcheck") or {}).get("test") or [])]


def _is_built(service: Mapping[str, Any]) -> bool:
    """Built from the project's Dockerfiles: its `ENV` and code are this checkout's."""
    return "build" in service


def _is_spark(service: Mapping[str, Any]) -> bool:
    return Path((cf.as_list(service.get("entrypoint")) or [""])[0]).name == "spark-class"


def _is_airflow(service: Mapping[str, Any]) -> bool:
    return _is_built(service) and not _is_spark(service)


def _is_worker(service: Mapping[str, Any]) -> bool:
    return cf.as_list(service.get("command"))[:2] == ["celery", "worker"]


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _start_order(services: Mapping[str, Mapping[str, Any]], wanted: tuple[str, ...]) -> list[str]:
    """The `wanted` services and what they depend on, but `EXTERNAL`, each after everything it `depends_on`."""
    order: list[str] = []

    def visit(name: str, path: tuple[str, ...]) -> None:
        if name in order or name in EXTERNAL:
            return
        if name in path:
            raise StackError(f"depends_on cycle: {' -> '.join((*path, name))}")
        for dependency in services[name].get("depends_on") or {}:
            visit(dependency, (*path, name))
        order.append(name)

    for name in wanted:
        visit(name, ())
    return order
