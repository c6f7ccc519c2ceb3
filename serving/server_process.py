"""`python -m serving.server` in a child process, started and waited for until it serves.

For callers that must not share the server's interpreter: the benchmark (its client would share the server's
GIL) and the fault tests (they kill the server). The server binds a free port (`--port 0`); its address comes from
the line `ModelServer.start` logs once the versions on disk are loaded and it listens ("Serving <model> from
<folder> on <host>:<port>"), so the server is answering when `server_process` yields. Imports the standard
library only.
"""

from __future__ import annotations

import collections
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]  # the project root, where `python -m serving.server` runs
_LISTENING = re.compile(r"Serving \S+ from .* on (\S+:\d+)")
_LOG_LINES_KEPT = 200  # of the server's log, for the error when it does not start


class RunningServer(NamedTuple):
    """A server process that serves, and the `host:port` it listens on."""

    process: subprocess.Popen
    address: str


@contextmanager
def server_process(
    base_path: str | os.PathLike,
    model_name: str = "deepfm",
    flags: Sequence[str] = (),
    start_timeout_s: float = 180.0,
    stop_timeout_s: float = 30.0,
) -> Iterator[RunningServer]:
    """Run `python -m serving.server --base-path <base_path> --model-name <model_name> --port 0 <flags>`.

    Yields once the server listens; on exit the server is sent SIGTERM (it stops gracefully) and killed if it
    has not ended within `stop_timeout_s`. A caller may kill it earlier. The server logs at INFO (its readiness
    line is an INFO record); the log is read here and not shown.

    Args:
        base_path: the model base path, holding `<model_name>/<version>/`.
        model_name: the model to serve.
        flags: more flags of `python -m serving.server` (`--poll-interval-s`, `--grace-s`, ...).
        start_timeout_s: how long the server may take to listen (it imports TensorFlow and loads the versions).
        stop_timeout_s: how long it may take to stop after SIGTERM.

    Raises:
        RuntimeError: the server exited or did not listen within `start_timeout_s`; the message ends with its log.
    """
    command = [sys.executable, "-m", "serving.server", "--base-path", str(base_path), "--model-name", model_name,
               "--port", "0", *flags, "--log-level", "INFO"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: collections.deque[str] = collections.deque(maxlen=_LOG_LINES_KEPT)
    listening: list[str] = []

    def read_log() -> None:
        for line in process.stderr:
            lines.append(line)
            match = _LISTENING.search(line)
            if match and not listening:
                listening.append(match.group(1))

    reader = threading.Thread(target=read_log, name="server-log")
    reader.start()
    try:
        deadline = time.monotonic() + start_timeout_s
        while not listening:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                process.wait()
                reader.join()
                raise RuntimeError(f"`{' '.join(command)}` did not start serving:\n" + "".join(lines))
            time.sleep(0.1)
        yield RunningServer(process, listening[0])
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=stop_timeout_s)
            except subprocess.TimeoutExpired:
                process.kill()
        process.wait()
        reader.join()  # the log ends with the process
