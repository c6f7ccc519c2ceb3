"""Fixtures of the serving tests: a tiny SavedModel with the serving signature, local servers, and two guards.

The fixture models come from `fixture_model.build_exports`: versions of `dags.ops.bench.sample_model` (which
the serving benchmark, `dags.ops.bench.serving`, serves when no real export exists), and two broken ones.

`TFSERVING_GRPC_ADDR=host:port` points the client conformance tests at a running server (real TF Serving
from `docker/`, serving model `TFSERVING_MODEL_NAME`, default `deepfm`) instead of the local one; the tests that
need to control the model folder are then skipped.

Every test is guarded: a thread it started that still runs after its teardown, or a gRPC channel it opened and
left open, fails it. Servers bind port 0, so a client left sending after its test can reach the server of a
later test that got the same port, and skew what that test counts.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from tests.serving.fixture_model import Exports, build_exports
from tests.serving.helpers import MODEL_NAME, REMOTE_ADDRESS, REMOTE_MODEL_NAME, RUNNING_SERVERS, serving_servers

if TYPE_CHECKING:
    from serving.server import ModelServer  # imports TensorFlow

THREAD_END_S = 5.0  # how long the threads a test leaves behind get to end after its teardown


def _handler_threads(server: ModelServer) -> set[threading.Thread]:
    """The gRPC handler threads of a running `ModelServer`: its pool starts them on demand, in whichever test
    first sends it that many requests at once."""
    return set(server._thread_pool._threads)


def _is_open(channel: grpc.Channel) -> bool:
    try:
        channel._channel.check_connectivity_state(False)  # the public API has no "closed?"; this raises once closed
    except ValueError:
        return False
    return True


def _recording(
    open_channel: Callable[..., grpc.Channel], opened: list[tuple[str, grpc.Channel]]
) -> Callable[..., grpc.Channel]:
    """`open_channel` that also appends `(target, channel)` to `opened`."""

    def open_and_record(target: str, *args, **kwargs) -> grpc.Channel:
        channel = open_channel(target, *args, **kwargs)
        opened.append((target, channel))
        return channel

    return open_and_record


@pytest.fixture(autouse=True)
def no_thread_outlives_its_test() -> Iterator[None]:
    """Fail a test if a thread it started still runs `THREAD_END_S` after its teardown.

    Fixtures of wider scope are set up before this one (pytest orders fixtures by scope), so their threads are
    in `before`; so are threads left by an earlier test, which that test already failed on. Function-scoped
    fixtures are torn down before this one (autouse fixtures are set up before those the test asks for), so the
    servers of `start_server` have stopped. Dummy threads (a thread not started by Python calling into it) are
    not Python's to join, and are left out.
    """
    before = set(threading.enumerate())
    outliving = list(RUNNING_SERVERS)  # servers of module and session fixtures
    yield
    allowed = before.union(*(_handler_threads(server) for server in outliving if server in RUNNING_SERVERS))
    deadline = time.monotonic() + THREAD_END_S
    running = []
    for thread in threading.enumerate():
        if thread not in allowed and not isinstance(thread, threading._DummyThread):
            thread.join(max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                running.append(f"{thread.name!r} (daemon={thread.daemon})")
    if running:
        pytest.fail(f"Threads still running {THREAD_END_S:.0f} s after the test: {', '.join(running)}. Stop and join "
                    "them in `finally`.", pytrace=False)  # fmt: skip


@pytest.fixture(autouse=True)
def no_channel_outlives_its_test(monkeypatch) -> Iterator[None]:
    """Fail a test that leaves open a gRPC channel it opened (directly or through a `ServingClient`).

    Channels of wider-scoped fixtures were opened before the patch, and are not tracked.
    """
    opened: list[tuple[str, grpc.Channel]] = []
    for name in ("insecure_channel", "secure_channel"):
        monkeypatch.setattr(grpc, name, _recording(getattr(grpc, name), opened))
    yield
    left_open = [target for target, channel in opened if _is_open(channel)]
    if left_open:
        pytest.fail(f"gRPC channels left open by the test, to: {', '.join(left_open)}. Close them (clients too) "
                    "with `with`.", pytrace=False)  # fmt: skip


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return build_exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture
def start_server() -> Iterator[Callable[..., tuple[ModelServer, str]]]:
    """Start local servers, stopped at the end of the test: `start(base_path, **config) -> (server, address)`."""
    with serving_servers() as start:
        yield start


@dataclass(frozen=True)
class Endpoint:
    """Where the conformance tests send requests; `export` is the SavedModel served (None when remote)."""

    address: str
    model_name: str
    export: Path | None
    version: int | None


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory, exports) -> Iterator[Endpoint]:
    if REMOTE_ADDRESS:
        yield Endpoint(REMOTE_ADDRESS, REMOTE_MODEL_NAME, None, None)
        return
    from serving.push import push

    base = tmp_path_factory.mktemp("conformance_models")
    version = push(exports.good[0.0], base, MODEL_NAME)
    with serving_servers() as start:
        _, address = start(base, version_labels={"stable": version, "missing": 42})
        yield Endpoint(address, MODEL_NAME, exports.good[0.0], version)
