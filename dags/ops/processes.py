"""Long-running commands as supervised processes: each leads a session of its own and logs to its own file.

`Processes` is what `AirflowStack` (`make airflow`, `make demo`) and the deploy test (`make deploy-test`, the
compose topology as local processes) start their components with. Stopping leaves no process behind, whatever
signals arrive and whenever:
- every process started here leads a session and a process group of its own, so a signal to the caller's process
  group (Ctrl-C, a closed terminal, `make`) reaches the caller alone, and the caller decides how to stop;
- `Processes.stop` runs with TERM, INT and HUP held back (for callers whose handlers raise, like Ctrl-C under
  pytest); it sends TERM to each process group and, once the process has exited or after a grace, KILLs whatever
  is left in its session (task processes of Airflow make process groups of their own, not sessions);
- on Linux, each process also gets TERM when the thread that started it dies, even by SIGKILL (`PR_SET_PDEATHSIG`).

`StopSignals` turns TERM, INT and HUP into a `StopRequested` raised where the program waits (its `sleep`), never
from inside a signal handler. Importing this module does nothing.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Self

logger = logging.getLogger(__name__)

# What a person, a terminal or a service manager sends to stop a runner.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
DEFAULT_EPHEMERAL_PORTS = (32768, 60999)
PORT_FLOOR = 16384  # `free_port` picks in [PORT_FLOOR, the ephemeral range's start): above the usual services' ports
PORT_TRIES = 200


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
    """A TCP port on 127.0.0.1 that nothing holds right now, below the kernel's ephemeral range.

    The ephemeral range is where `bind(0)` picks from, and where every outgoing connection takes its local port: a
    port picked so can be taken by some client's connection before the server that was given it binds it (a
    component that starts after `airflow db migrate` binds a minute later). The deploy test's scheduler lost its
    health-check port ("Address already in use") in a suite whose other tests held many connections. A port below
    the range is taken only by another server, or by another caller's pick of the same port (one in 16,000).
    """
    low, _ = ephemeral_ports()
    pick = random.SystemRandom()
    for _ in range(PORT_TRIES):
        port = pick.randrange(PORT_FLOOR, low) if low > PORT_FLOOR else 0
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return sock.getsockname()[1]
    raise StackError(f"no free port in [{PORT_FLOOR}, {low}) after {PORT_TRIES} tries")


def ephemeral_ports(path: Path = EPHEMERAL_RANGE_FILE) -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections and `bind(0)` (Linux's default where unreadable)."""
    try:
        low, high = map(int, path.read_text().split())
    except (OSError, ValueError):
        return DEFAULT_EPHEMERAL_PORTS
    return low, high


def wait_until(
    what: str,
    ready: Callable[[], Any],
    deadline: float,
    *,
    sleep: Callable[[float], None] = time.sleep,
    check: Callable[[], None] = lambda: None,
    interval: float = 2,
    where: str = "",
) -> Any:
    """Call `check` (which raises when something died) and `ready` until `ready` returns a truthy value; return it.

    Raises:
        StackError: `deadline` (a `time.monotonic` value) passed first; `where` is added to the message.
    """
    while True:
        check()
        result = ready()
        if result:
            return result
        if time.monotonic() > deadline:
            raise StackError(f"timed out waiting for {what}{where}")
        sleep(interval)


@dataclass
class Component:
    """One supervised process; its pid is also its process group's and its session's id."""

    name: str
    process: subprocess.Popen
    log_path: Path
    log_file: IO[str] = field(repr=False)


class Processes:
    """Commands started in sessions of their own, each logging to `<log_dir>/<name>.log`; `stop` ends them all.

    Use as a context manager, so that whatever was started is stopped.

    Args:
        log_dir: where each process's stdout and stderr go; kept afterwards.
        sleep: how waits pause between polls; `StopSignals.sleep` makes every wait a point where a stop signal
            ends it (by `StopRequested`).
    """

    def __init__(self, log_dir: Path, sleep: Callable[[float], None] = time.sleep) -> None:
        self.log_dir = Path(log_dir)
        self.sleep = sleep
        self.session_ids: list[int] = []  # every session started, for a caller that checks none outlives `stop`
        self._components: list[Component] = []

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def components(self) -> tuple[Component, ...]:
        """The processes started and not stopped yet, in start order."""
        return tuple(self._components)

    def spawn(
        self, name: str, argv: Sequence[str], env: Mapping[str, str], cwd: str | os.PathLike | None = None
    ) -> Component:
        """Start `argv` as `name`, appending its output to `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log_path = self.log_dir / f"{name}.log"
        log_file = log_path.open("a")
        try:
            process = subprocess.Popen(
                list(argv), env=dict(env), cwd=cwd, stdout=log_file, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True, preexec_fn=_parent_death_signal(),
            )  # fmt: skip
        except BaseException:
            log_file.close()
            raise
        component = Component(name, process, log_path, log_file)
        self._components.append(component)
        self.session_ids.append(process.pid)
        logger.info("started %s (pid %s), log %s", name, process.pid, log_path)
        return component

    def run(
        self,
        name: str,
        argv: Sequence[str],
        env: Mapping[str, str],
        timeout: float,
        cwd: str | os.PathLike | None = None,
    ) -> None:
        """Run a one-shot command like a component, so that `stop` ends it too if the wait is cut short.

        Raises:
            StackError: it ran over `timeout` seconds or exited with an error; the message ends with its log.
        """
        component = self.spawn(name, argv, env, cwd)
        shown = " ".join([Path(argv[0]).name, *argv[1:]])
        deadline = time.monotonic() + timeout
        while not _exited(component.process):
            if time.monotonic() > deadline:
                raise StackError(f"`{shown}` ran over {timeout} s; log {component.log_path}")
            self.sleep(0.2)
        self.stop(grace=0, components=[component])
        if component.process.returncode != 0:
            raise StackError(f"`{shown}` exited {component.process.returncode}:\n{tail(component.log_path)}")

    def check_alive(self) -> None:
        """Raise `StackError` naming the first started process that has exited, with the end of its log."""
        for component in self._components:
            if component.process.poll() is not None:
                raise StackError(
                    f"{component.name} exited with {component.process.returncode}; log {component.log_path}:\n"
                    f"{tail(component.log_path)}"
                )

    def wait(self, what: str, ready: Callable[[], Any], deadline: float, interval: float = 2) -> Any:
        """`wait_until` that fails as soon as any process here has exited."""
        return wait_until(what, ready, deadline, sleep=self.sleep, check=self.check_alive, interval=interval,
                          where=f"; logs in {self.log_dir}")  # fmt: skip

    def wait_for_log(self, name: str, *fragments: str, deadline: float) -> None:
        """Wait until one line of `name`'s log holds every fragment, in any order."""
        log_path = self.log_dir / f"{name}.log"

        def logged() -> bool:
            return any(all(part in line for part in fragments) for line in log_path.read_text().splitlines())

        self.wait(f"{name} to log {' … '.join(fragments)!r}", logged, deadline)

    def stop(self, grace: float = 20, components: Sequence[Component] | None = None) -> None:
        """Stop every process (or those of `components`) and every process they started; safe to call again.

        TERM goes to each process group; once the process has exited, or after `grace` seconds, whatever is left
        in its session is killed. TERM, INT and HUP are held back until it is done.
        """
        chosen = list(self._components if components is None else components)
        with _signals_held(STOP_SIGNALS):
            for component in chosen:
                if not _exited(component.process):
                    _signal_group(component.process, signal.SIGTERM)
            deadline = time.monotonic() + grace
            for component in reversed(chosen):
                while not _exited(component.process) and time.monotonic() < deadline:
                    time.sleep(0.05)
                if not _exited(component.process):
                    logger.warning("%s ignored SIGTERM for %s s; killing it", component.name, grace)
                kill_session(component.process.pid)
                component.process.wait()
                component.log_file.close()
                self._components.remove(component)


def session_members(session_id: int) -> list[int]:
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


def tail(path: Path, lines: int = 40) -> str:
    """The last `lines` lines of a log file; empty when there is none."""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""


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


def kill_session(session_id: int) -> None:
    """SIGKILL a process group and whatever is left in the session of the same id (a process started here leads
    both, so its pid is their id)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(session_id, signal.SIGKILL)
    for _ in range(100):  # a member may fork while the others are killed
        members = session_members(session_id)
        if not members:
            return
        for pid in members:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.02)
    logger.warning("processes %s of session %s survived SIGKILL", members, session_id)


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
