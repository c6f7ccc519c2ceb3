"""Shared values, sample data and local servers of the serving tests (fixtures live in `conftest.py`)."""

from __future__ import annotations

import json
import os
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from dags.ops.bench.sample_model import sample_columns
from deepfm_model.spec.files import to_python

if TYPE_CHECKING:
    from serving.client import ServingClient
    from serving.server import ModelServer  # imports TensorFlow

REMOTE_ADDRESS = os.environ.get("TFSERVING_GRPC_ADDR")
REMOTE_MODEL_NAME = os.environ.get("TFSERVING_MODEL_NAME", "deepfm")
MODEL_NAME = "deepfm"

local_only = pytest.mark.skipif(bool(REMOTE_ADDRESS), reason="controls the model folder of a local server")

RUNNING_SERVERS: list[ModelServer] = []  # started by `serving_servers` and not stopped yet


@contextmanager
def serving_servers() -> Iterator[Callable[..., tuple[ModelServer, str]]]:
    """Local servers on free ports, `start(base_path, **config) -> (server, address)`; all stop on exit.

    A fixture wraps it, so a server lives as long as that fixture: the servers of a test stop at its teardown.
    """
    from serving.server import ModelServer, ServerConfig

    def stop(server: ModelServer) -> None:
        server.stop(grace=0)
        RUNNING_SERVERS.remove(server)

    with ExitStack() as stack:

        def start(base_path: Path, **overrides) -> tuple[ModelServer, str]:
            settings = {"model_name": MODEL_NAME, "port": 0, "poll_interval_s": 0.1, "grace_s": 1.0, **overrides}
            server = ModelServer(ServerConfig(base_path=str(base_path), **settings))
            port = server.start()
            RUNNING_SERVERS.append(server)
            stack.callback(stop, server)
            return server, f"127.0.0.1:{port}"

        yield start


@dataclass(frozen=True)
class HttpAnswer:
    """What a GET got: the status, the content type, the body (`json` decodes it)."""

    status: int
    content_type: str
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def http_get(url: str, timeout: float = 10.0) -> HttpAnswer:
    """GET `url`; an HTTP error status is an answer, not an exception."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return HttpAnswer(response.status, response.headers["Content-Type"], response.read())
    except urllib.error.HTTPError as error:
        with error:
            return HttpAnswer(error.code, error.headers["Content-Type"], error.read())


def sample_rows(rows: int, seed: int = 0) -> list[dict[str, object]]:
    """`sample_columns` as rows of plain Python values."""
    columns = sample_columns(rows, seed)
    return [{name: to_python(values[i]) for name, values in columns.items()} for i in range(rows)]


@dataclass
class Stream:
    """What the threads of `request_streams` got: every answer, and every failure (a lost request)."""

    answers: list[Any] = field(default_factory=list)
    errors: list[Exception] = field(default_factory=list)


@contextmanager
def request_streams(
    address: str, send: Callable[[ServingClient], Any], threads: int = 1, **client_options
) -> Iterator[Stream]:
    """`threads` threads, each with its own `ServingClient` (no retries unless `client_options` say so), calling
    `send(client)` back to back until the block ends; the threads are joined on exit."""
    from serving.client import ServingClient

    stream = Stream()
    stop = threading.Event()

    def keep_sending() -> None:
        with ServingClient(address, MODEL_NAME, **{"max_retries": 0, **client_options}) as client:
            while not stop.is_set():
                try:
                    stream.answers.append(send(client))
                except Exception as error:  # noqa: BLE001  (any failure is a lost request)
                    stream.errors.append(error)

    running = [threading.Thread(target=keep_sending, name="request-stream") for _ in range(threads)]
    for thread in running:
        thread.start()
    try:
        yield stream
    finally:
        stop.set()
        for thread in running:
            thread.join()


class PollCounter:
    """Counts the polling passes of a running `ModelServer`, to wait for passes that began after some moment.

    Installed on the server's `ModelManager` (its polling thread calls `manager.poll` once a pass), so a test that
    asserts something did *not* happen can first wait until the server had the chance to make it happen:

        polls = PollCounter(server)
        moment = polls.started    # before the change the server must not act on
        ...                       # the change
        polls.wait(after=moment, passes=2)
        assert ...                # what must not have happened
    """

    def __init__(self, server: ModelServer):
        self._changed = threading.Condition()
        self._started = 0
        self._finished: list[tuple[int, bool]] = []  # (number of the pass, whether it read the model config file)
        poll = server.manager.poll

        def counted_poll(read_config: bool = True) -> None:
            with self._changed:
                self._started += 1
                number = self._started
            try:
                poll(read_config=read_config)
            finally:
                with self._changed:
                    self._finished.append((number, read_config))
                    self._changed.notify_all()

        server.manager.poll = counted_poll

    @property
    def started(self) -> int:
        """Passes begun so far; a pass numbered above this began after now."""
        with self._changed:
            return self._started

    def wait(self, after: int, passes: int = 1, config_reads: bool = False, timeout_s: float = 30.0) -> None:
        """Block until `passes` passes numbered above `after` (with `config_reads`: passes that re-read the model
        config file) have finished; fail the test after `timeout_s`."""

        def counted() -> int:
            return sum(1 for number, read in self._finished if number > after and (read or not config_reads))

        with self._changed:
            if not self._changed.wait_for(lambda: counted() >= passes, timeout=timeout_s):
                kind = "config re-reads" if config_reads else "polls"
                raise AssertionError(f"{timeout_s:.0f} s passed with {counted()} of {passes} {kind} done")
