"""A small client of Airflow 3.3's REST API (`/api/v2`), logged in through the simple auth manager.

What the runners and tests need of a running Airflow: its health, whether a DAG has parsed, triggering a DagRun
and waiting for it, and its task instances (state, queue, the hostname of the worker that ran each). Used by
`AirflowStack` (which also starts Airflow) and by the deploy test (which starts the compose topology). Importing
this module does nothing.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from typing import Any

from dags.ops.processes import StackError, wait_until

logger = logging.getLogger(__name__)

TERMINAL_RUN_STATES = {"success", "failed"}


class AirflowClient:
    """The REST API at `url` as `username`.

    Args:
        url: the API server's base URL, e.g. `http://127.0.0.1:8080`.
        username: a user of the simple auth manager.
        password: its password (from the auth manager's passwords file).
        sleep: how waits pause between polls.
        check_alive: called on every poll of a wait; raises when the Airflow behind the URL has died, so a wait
            fails at once rather than at its deadline.
        where: added to a timed-out wait's message (where the logs are).
    """

    def __init__(
        self,
        url: str,
        username: str,
        password: str,
        *,
        sleep: Callable[[float], None] = time.sleep,
        check_alive: Callable[[], None] = lambda: None,
        where: str = "",
    ) -> None:
        self.url = url
        self.username = username
        self.password = password
        self._sleep = sleep
        self._check_alive = check_alive
        self._where = where
        self._token: str | None = None

    def _wait(self, what: str, ready: Callable[[], Any], deadline: float, interval: float = 2) -> Any:
        return wait_until(what, ready, deadline, sleep=self._sleep, check=self._check_alive, interval=interval,
                          where=self._where)  # fmt: skip

    def token(self) -> str:
        """A JWT for the user from `POST /auth/token` (cached)."""
        import httpx

        if self._token is None:
            response = httpx.post(f"{self.url}/auth/token", timeout=30,
                                  json={"username": self.username, "password": self.password})  # fmt: skip
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def request(self, method: str, path: str, *, check: bool = True, **kwargs: Any):
        """Call the REST API as the user; raises on an error status unless `check=False`."""
        import httpx

        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=60, **kwargs)
        if check and response.is_error:
            raise StackError(f"{method} {path} -> {response.status_code}: {response.text}")
        return response

    def health(self) -> dict:
        """`GET /api/v2/monitor/health` (no login needed); empty while the API server does not answer."""
        import httpx

        try:
            return httpx.get(f"{self.url}/api/v2/monitor/health", timeout=5).json()
        except (httpx.HTTPError, ValueError):
            return {}

    def wait_healthy(self, parts: Sequence[str], deadline: float) -> None:
        """Wait until the health report says each of `parts` (`metadatabase`, `scheduler`, ...) is healthy."""

        def healthy() -> bool:
            report = self.health()
            return all((report.get(part) or {}).get("status") == "healthy" for part in parts)

        self._wait(f"the API server to report {', '.join(parts)} healthy", healthy, deadline)

    def wait_for_dag(self, dag_id: str, deadline: float) -> None:
        """Wait until `dag_id` is parsed; raise at once if DAG files failed to import."""

        def parsed() -> bool:
            if self.request("GET", f"/api/v2/dags/{dag_id}", check=False).status_code == 200:
                return True
            errors = self.request("GET", "/api/v2/importErrors").json()["import_errors"]
            if errors:
                raise StackError(f"DAG files failed to import: {json.dumps(errors, indent=2)}")
            return False

        self._wait(f"DAG {dag_id} to be parsed", parsed, deadline)

    def unpause(self, dag_id: str) -> None:
        self.request("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def trigger(self, dag_id: str, logical_date: str, run_id: str | None = None) -> dict:
        """Create a DagRun through `POST /api/v2/dags/{dag_id}/dagRuns`; returns the run."""
        body = {"logical_date": logical_date, **({"dag_run_id": run_id} if run_id else {})}
        return self.request("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()

    def dag_run(self, dag_id: str, run_id: str) -> dict:
        return self.request("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float, interval: float = 2) -> dict:
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

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> list[str]:
        """The messages of one try's task log (`GET .../taskInstances/{task_id}/logs/{try_number}`), in order."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{try_number}"
        content = self.request("GET", path, params={"full_content": "true"},
                               headers={"Accept": "application/json"}).json()["content"]  # fmt: skip
        return [line.get("event", "") if isinstance(line, dict) else str(line) for line in content]

    def task_instances(self, dag_id: str, run_id: str) -> list[dict]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        return self.request("GET", path, params={"limit": 100}).json()["task_instances"]
