"""`make airflow` stops cleanly: signals to the runner's process group, at any moment, leave no process behind.

Real processes, no mocks. Each round starts `python -m dags.ops.airflow_stack` (through a one-line Makefile,
as `make airflow` does, or directly) in a session of its own, waits for a moment in its life (interpreter start-up,
`airflow db migrate`, a component just spawned, the stack healthy), sends a burst of TERM, INT and HUP to its
process group (the later ones land during the clean-up), and then checks that:

- the runner ended by the first signal (`make` by one of them), after stopping every component;
- no live process remains in the runner's process group or session;
- no live process remains below this test at all: the test is the child subreaper of everything it starts
  (`PR_SET_CHILD_SUBREAPER`), so even a process that left the runner's tree and session would be found;
- the API server's port is free.

One round starts the runner with `--scheduled-runs`, the flag `make airflow SCHEDULED=1` passes: the scheduler
must then create the DAG's scheduled run once it is unpaused, and the burst lands while that run is running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from dags.ops.airflow_client import AirflowClient
from dags.ops.airflow_stack import ADMIN_USERNAME, free_port
from tests.e2e.conftest import PROJECT_ROOT, airflow_env

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(600),
    pytest.mark.skipif(sys.platform != "linux", reason="reads /proc and sets PR_SET_CHILD_SUBREAPER (Linux)"),
]

PR_SET_CHILD_SUBREAPER = 36  # <linux/prctl.h>
MOMENT_TIMEOUT_S = 240
EXIT_TIMEOUT_S = 60  # the stack's stop grace (20 s) and then some
TERM, INT, HUP = signal.SIGTERM, signal.SIGINT, signal.SIGHUP


@dataclass(frozen=True)
class Round:
    """One start and stop of the runner.

    Attributes:
        name: what the round tests (its test id part).
        via_make: start it as `make airflow` does (`make` passes TERM on to the runner itself).
        home: which Airflow home (`fresh` is used once; `shared` is migrated by the first round that gets that far).
        moment: the runner output line to wait for before signalling; `None` signals 0.3 s after the start.
        signals: sent to the process group 0.1 s apart, the first at the moment.
        scheduled: start it with `--scheduled-runs`, unpause the DAG at the moment and wait for its scheduled run.
    """

    name: str
    via_make: bool
    home: str
    moment: str | None
    signals: tuple[signal.Signals, ...]
    scheduled: bool = False


DAG_ID = "deepfm_nightly"
SCHEDULED_RUN_TIMEOUT_S = 180
ROUNDS = (
    Round("interpreter-start-up", via_make=False, home="fresh", moment=None, signals=(TERM,)),
    Round("db-migrate", via_make=True, home="fresh", moment="started db-migrate", signals=(TERM, TERM, TERM)),
    Round("healthy", via_make=True, home="shared", moment="Airflow UI:", signals=(TERM, TERM, INT, HUP, TERM)),
    Round("api-server-spawned", via_make=False, home="shared", moment="started api-server", signals=(TERM, INT)),
    Round("triggerer-spawned", via_make=True, home="shared", moment="started triggerer", signals=(HUP, TERM)),
    Round("pools-import", via_make=False, home="shared", moment="started pools-import", signals=(INT, INT, TERM)),
    Round("scheduled-run", via_make=True, home="shared", moment="Airflow UI:", signals=(TERM, INT), scheduled=True),
)


def process_table() -> dict[int, tuple[str, int, int, int]]:
    """pid -> (state, ppid, process group, session) of every process, from `/proc/<pid>/stat`."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        with contextlib.suppress(OSError, ValueError):
            state, ppid, pgrp, session = entry.joinpath("stat").read_text().rpartition(")")[2].split()[:4]
            table[int(entry.name)] = (state, int(ppid), int(pgrp), int(session))
    return table


def descendants(root: int, table: dict[int, tuple[str, int, int, int]]) -> set[int]:
    children: dict[int, set[int]] = {}
    for pid, (_state, ppid, _pgrp, _session) in table.items():
        children.setdefault(ppid, set()).add(pid)
    found, todo = set(), [root]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def describe(pid: int) -> str:
    with contextlib.suppress(OSError):
        return f"{pid} " + Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    return f"{pid} (gone)"


def leftovers(group: int, before: set[int]) -> list[str]:
    """Live processes in `group`'s process group or session, or below this test and not there `before`."""
    table = process_table()
    live = {pid for pid, (state, *_rest) in table.items() if state not in ("Z", "X")}
    in_group = {pid for pid in live if group in table[pid][2:]}
    below = (descendants(os.getpid(), table) & live) - before
    return sorted(describe(pid) for pid in in_group | below)


def reap_orphans(keep: set[int]) -> None:
    """Reap the zombies re-parented to this test (it is their subreaper), except `keep`."""
    for pid, (state, ppid, *_rest) in process_table().items():
        if ppid == os.getpid() and state == "Z" and pid not in keep:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)


def port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # connections in TIME_WAIT do not count
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


@pytest.fixture
def subreaper() -> Iterator[set[int]]:
    """This process as the subreaper of everything it starts; yields the pids already below it."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        pytest.skip(f"prctl(PR_SET_CHILD_SUBREAPER) failed: {os.strerror(ctypes.get_errno())}")
    before = descendants(os.getpid(), process_table())
    try:
        yield before
    finally:
        libc.prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
        reap_orphans(keep=before)


def start_runner(round_: Round, home: Path, port: int, output: Path) -> subprocess.Popen:
    """The runner as `make airflow` starts it (or directly), leading a session and process group of its own."""
    command = [sys.executable, "-m", "dags.ops.airflow_stack", "--airflow-home", str(home), "--port", str(port)]
    command += ["--scheduled-runs"] if round_.scheduled else []
    if round_.via_make:
        makefile = output.with_suffix(".mk")
        makefile.write_text(f"SHELL := /bin/bash\nairflow:\n\t{' '.join(command)}\n")
        command = [shutil.which("make") or "make", "-s", "-f", str(makefile), "airflow"]
    env = {**airflow_env(home.parent), "AIRFLOW_HOME": str(home)}
    with output.open("w") as log:
        return subprocess.Popen(command, cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip


def scheduled_run(port: int, output: Path) -> dict:
    """Unpause the DAG through the runner's API server; wait for the scheduler's scheduled run to be running."""
    password = re.search(r"password: (\S+)", output.read_text()).group(1)
    client = AirflowClient(f"http://127.0.0.1:{port}", ADMIN_USERNAME, password)
    client.unpause(DAG_ID)
    deadline = time.monotonic() + SCHEDULED_RUN_TIMEOUT_S
    while True:
        runs = client.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns").json()["dag_runs"]
        scheduled = [run for run in runs if run["run_type"] == "scheduled" and run["state"] == "running"]
        if scheduled:
            return scheduled[0]
        assert time.monotonic() < deadline, f"no running scheduled run in {SCHEDULED_RUN_TIMEOUT_S} s: {runs}"
        time.sleep(1)


def wait_for_moment(process: subprocess.Popen, output: Path, moment: str | None) -> None:
    if moment is None:
        time.sleep(0.3)
        return
    deadline = time.monotonic() + MOMENT_TIMEOUT_S
    while moment not in output.read_text(errors="replace"):
        assert process.poll() is None, f"the runner exited {process.returncode} early:\n{output.read_text()}"
        assert time.monotonic() < deadline, f"no {moment!r} in {MOMENT_TIMEOUT_S} s:\n{output.read_text()}"
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")
def test_signals_to_the_runners_group_leave_no_process(tmp_path: Path, subreaper: set[int]) -> None:
    homes = {"fresh": None, "shared": tmp_path / "shared" / "airflow"}
    timings = []
    for index, round_ in enumerate(ROUNDS):
        started = time.monotonic()
        home = homes[round_.home] or tmp_path / f"fresh-{index}" / "airflow"
        port, output = free_port(), tmp_path / f"{index}-{round_.name}.log"
        runner = start_runner(round_, home, port, output)
        try:
            wait_for_moment(runner, output, round_.moment)
            if round_.scheduled:
                timings.append(f"scheduled run {scheduled_run(port, output)['dag_run_id']}")
            for sig in round_.signals:
                os.killpg(runner.pid, sig)
                time.sleep(0.1)
            runner.wait(timeout=EXIT_TIMEOUT_S)
        finally:
            if runner.poll() is None:  # keep later tests clean even when this one fails
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(runner.pid, signal.SIGKILL)
                runner.wait()
        log = output.read_text(errors="replace")
        left = leftovers(runner.pid, before=subreaper)
        reap_orphans(keep=subreaper)

        assert left == [], f"{round_.name}: processes left behind:\n" + "\n".join(left) + f"\n{log}"
        assert port_is_free(port), f"{round_.name}: port {port} still taken:\n{log}"
        # The runner dies by the first signal; `make` re-raises the last one it caught before it could exit.
        ended_by = {-round_.signals[0]} if not round_.via_make else {-sig for sig in round_.signals}
        assert runner.returncode in ended_by, f"{round_.name}: exited {runner.returncode}:\n{log}"
        if round_.via_make and round_.moment is not None:
            assert f"{round_.signals[0].name}: every Airflow process has stopped" in log, log
        timings.append(f"{round_.name} {time.monotonic() - started:.1f} s")
    print("\n" + "\n".join(timings))


def test_make_airflow_passes_scheduled_runs_only_when_asked() -> None:
    def command(*variables: str) -> str:
        shown = subprocess.run(["make", "-n", "-s", "airflow", *variables], cwd=PROJECT_ROOT, capture_output=True,
                               text=True, check=True, timeout=60)  # fmt: skip
        return next(line for line in shown.stdout.splitlines() if "dags.ops.airflow_stack" in line)

    assert command("SCHEDULED=1").endswith("--scheduled-runs")
    assert "--scheduled-runs" not in command()
