"""Servers a chaos case may restart: Postgres and Redis of the test's own, and a small file system to fill.

The deploy test borrows the Postgres and Redis running on this machine; restarting those would disturb whatever
else uses them, so the chaos test starts its own, from the same binaries: Redis with compose's own command
(`redis-server --appendonly yes`, so queued Celery tasks and the online store survive a restart, as compose's
volume keeps them), Postgres in a fresh cluster (trust auth on 127.0.0.1, run as the `postgres` user when this
runs as root, as Postgres refuses root). A restart is what `docker restart` does to each: the image's stop signal
(Postgres: SIGINT, a fast shutdown that ends open sessions; Redis: SIGTERM, which writes the append-only file),
then the same command again.

`SmallFileSystem` is a tmpfs mounted over a folder (root only: the test fails saying so otherwise), which the test
fills to the last few kilobytes when the fault strikes and empties to heal.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from dags.ops.processes import Component, Processes, free_port, wait_until

START_TIMEOUT_S = 60
POSTGRES_USER = "postgres"


class RestartableServer:
    """One server process of the test's own; `restart` stops it with the image's stop signal and starts it again."""

    name = ""
    stop_signal = signal.SIGTERM

    def __init__(self, processes: Processes, folder: Path) -> None:
        self.processes = processes
        self.folder = folder
        self.port = free_port()
        self._component: Component | None = None

    def argv(self) -> Sequence[str]:
        raise NotImplementedError

    def ready(self) -> bool:
        raise NotImplementedError

    def start(self) -> None:
        self._component = self.processes.spawn(self.name, self.argv(), dict(os.environ))
        deadline = time.monotonic() + START_TIMEOUT_S
        self.processes.wait(f"{self.name} on port {self.port}", self.ready, deadline, interval=0.2)

    def stop(self) -> None:
        """The stop signal, then wait for the server to exit (a clean shutdown)."""
        component = self._component
        assert component is not None, f"{self.name} is not running"
        os.kill(component.process.pid, self.stop_signal)
        wait_until(f"{self.name} to shut down", lambda: component.process.poll() is not None,
                   time.monotonic() + START_TIMEOUT_S, interval=0.1)  # fmt: skip
        self.processes.stop(grace=0, components=[component])
        self._component = None

    def restart(self) -> None:
        self.stop()
        self.start()


class RedisServer(RestartableServer):
    """`redis-server` with compose's arguments, on a port and data folder of its own."""

    name = "redis"
    stop_signal = signal.SIGTERM

    def __init__(self, processes: Processes, folder: Path, compose_command: Sequence[str]) -> None:
        super().__init__(processes, folder)
        self.compose_command = list(compose_command)
        folder.mkdir(parents=True, exist_ok=True)

    def argv(self) -> Sequence[str]:
        return [*self.compose_command, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.folder)]

    def calls(self, command: str) -> int:
        """How many times `command` ran since the server started (`INFO commandstats`)."""
        import redis

        with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5) as client:
            return int((client.info("commandstats").get(f"cmdstat_{command}") or {}).get("calls", 0))

    def ready(self) -> bool:
        import redis

        try:
            with redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=1) as client:
                return bool(client.ping())
        except redis.RedisError:
            return False


class PostgresServer(RestartableServer):
    """A Postgres cluster of its own (`initdb`, trust auth), listening on 127.0.0.1 only."""

    name = "postgres"
    stop_signal = signal.SIGINT  # the postgres image's STOPSIGNAL: a fast shutdown

    def __init__(self, processes: Processes, folder: Path) -> None:
        super().__init__(processes, folder)
        self.data = folder / "data"
        self._as_user: list[str] = []
        if os.geteuid() == 0:  # Postgres will not run as root
            user = pwd.getpwnam(POSTGRES_USER)
            self._as_user = ["setpriv", f"--reuid={user.pw_uid}", f"--regid={user.pw_gid}", "--init-groups"]
            folder.mkdir(parents=True, exist_ok=True)
            os.chown(folder, user.pw_uid, user.pw_gid)
        subprocess.run(
            [*self._as_user, _binary("initdb"), "-D", str(self.data), "--auth=trust", "-U", POSTGRES_USER],
            check=True, capture_output=True, text=True,
        )  # fmt: skip

    @property
    def params(self) -> dict[str, str | int]:
        return {"host": "127.0.0.1", "port": self.port, "user": POSTGRES_USER}

    def argv(self) -> Sequence[str]:
        return [
            *self._as_user, _binary("postgres"), "-D", str(self.data), "-p", str(self.port), "-k", str(self.folder),
            "-c", "listen_addresses=127.0.0.1", "-c", "max_connections=300",
        ]  # fmt: skip

    def ready(self) -> bool:
        import psycopg2

        try:
            psycopg2.connect(dbname="postgres", connect_timeout=2, **self.params).close()
        except psycopg2.OperationalError:
            return False
        return True

    def sessions(self, database: str) -> set[int]:
        """Backend pids of the sessions open on `database` now."""
        import psycopg2

        connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **self.params)
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (database,))
                return {pid for (pid,) in cursor.fetchall()}
        finally:
            connection.close()

    def create_database(self, name: str) -> None:
        import psycopg2

        connection = psycopg2.connect(dbname="postgres", connect_timeout=5, **self.params)
        connection.autocommit = True
        try:
            with connection.cursor() as cursor:
                cursor.execute(f'CREATE DATABASE "{name}"')
        finally:
            connection.close()


def _binary(name: str) -> str:
    """A Postgres server binary: on `PATH`, else in Debian's versioned folder."""
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    if found is None:
        raise FileNotFoundError(f"no Postgres `{name}` on PATH or under /usr/lib/postgresql/*/bin")
    return str(found)


@contextlib.contextmanager
def private_folder(prefix: str) -> Iterator[Path]:
    """A folder under the system's temporary folder that another user (Postgres's) can reach; removed after."""
    folder = Path(tempfile.mkdtemp(prefix=prefix))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


class SmallFileSystem:
    """A tmpfs of `size_mb` mounted over `folder` for the `with` block (its contents hidden meanwhile)."""

    FILLER = ".chaos-filler"

    def __init__(self, folder: Path, size_mb: int) -> None:
        self.folder = folder
        self.size_mb = size_mb

    def __enter__(self) -> SmallFileSystem:
        if os.geteuid() != 0:
            raise PermissionError(f"mounting a small file system over {self.folder} needs root (mount -t tmpfs)")
        self.folder.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.folder)],
                       check=True, capture_output=True, text=True)  # fmt: skip
        return self

    def __exit__(self, *_exc: object) -> None:
        subprocess.run(["umount", "--lazy", str(self.folder)], check=True, capture_output=True, text=True)

    def free_bytes(self) -> int:
        stats = os.statvfs(self.folder)
        return stats.f_bavail * stats.f_frsize

    def fill(self, leave_bytes: int = 16 * 1024) -> int:
        """Take all but `leave_bytes` of the free space with one file; returns its size."""
        size = max(self.free_bytes() - leave_bytes, 0)
        with open(self.folder / self.FILLER, "wb") as filler:
            os.posix_fallocate(filler.fileno(), 0, size)
        return size

    def empty(self) -> None:
        (self.folder / self.FILLER).unlink(missing_ok=True)
