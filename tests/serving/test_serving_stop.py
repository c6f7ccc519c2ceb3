"""`python -m serving.server` stops under any burst of stop signals, at any moment, leaving no process and no port.

A server whose handler called `threading.Event.set` hung in about 1 of 6 bursts of alternating INT and TERM: a
second signal landing inside the first handler waited on the event's lock on the same thread, forever.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dags.ops.processes import free_port
from serving.push import push
from serving.server_process import ROOT
from tests.serving.helpers import MODEL_NAME, local_only

pytestmark = local_only

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
BURST = STOP_SIGNALS * 100  # 300 signals back to back
STOP_DEADLINE_S = 60.0
LISTENING = "Serving "  # the line `ModelServer.start` logs once it answers


def start(base: Path, port: int, log: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "serving.server", "--base-path", str(base), "--model-name", MODEL_NAME,
               "--port", str(port), "--log-level", "INFO"]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "2"}
    with log.open("w") as out:
        return subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)  # fmt: skip


def burst(process: subprocess.Popen) -> None:
    for signum in BURST:
        if process.poll() is not None:
            return
        os.kill(process.pid, signum)


def wait_serving(process: subprocess.Popen, log: Path, deadline_s: float = 180.0) -> float:
    """Seconds until the server logs that it serves."""
    started = time.monotonic()
    while LISTENING not in log.read_text():
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() - started < deadline_s, "the server did not start"
        time.sleep(0.05)
    return time.monotonic() - started


def assert_gone(process: subprocess.Popen, port: int, log: Path) -> None:
    try:
        process.wait(timeout=STOP_DEADLINE_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
        pytest.fail(f"the server was still running {STOP_DEADLINE_S:.0f} s after the burst:\n{log.read_text()[-3000:]}")
    with pytest.raises(ProcessLookupError):
        os.killpg(process.pid, 0)  # nothing left in its process group
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))


def test_bursts_of_stop_signals_at_random_moments_stop_the_server(tmp_path, exports):
    base = tmp_path / "models"
    push(exports.good[0.0], base)
    port, log = free_port(), tmp_path / "serving.log"
    process = start(base, port, log)
    ready_s = wait_serving(process, log)  # the first burst lands on a serving server
    burst(process)
    assert_gone(process, port, log)
    assert "received: stopping" in log.read_text()
    moments = random.Random(0)
    for attempt in range(3):  # then at random moments of the start: imports, loading, serving
        port, log = free_port(), tmp_path / f"serving-{attempt}.log"
        process = start(base, port, log)
        time.sleep(moments.uniform(0, 1.2 * ready_s))  # the moment is the point of the test, not a wait for it
        burst(process)
        assert_gone(process, port, log)
