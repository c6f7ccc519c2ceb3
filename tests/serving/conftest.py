"""Fixtures of the serving tests: a tiny SavedModel with the serving signature, a local server, sample rows.

The fixture models come from `fixture_model.build_exports` (also used by `serving.bench` when no real export
exists).

`TFSERVING_GRPC_ADDR=host:port` points the client conformance tests at a running server (real TF Serving
from `docker/`, serving model `TFSERVING_MODEL_NAME`, default `deepfm`) instead of the local one; the tests that
need to control the model folder are then skipped.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.serving.fixture_model import Exports, build_exports
from tests.serving.helpers import MODEL_NAME, REMOTE_ADDRESS, REMOTE_MODEL_NAME


@pytest.fixture(scope="session")
def exports(tmp_path_factory) -> Exports:
    return build_exports(tmp_path_factory.mktemp("exports"))


@pytest.fixture(scope="session")
def start_server() -> Iterator[Callable[..., tuple[object, str]]]:
    """Start local servers (stopped at the end of the session): `start(base_path, **config) -> (server, address)`."""
    from serving.server import ModelServer, ServerConfig

    servers = []

    def start(base_path: Path, **overrides) -> tuple[ModelServer, str]:
        config = ServerConfig(base_path=str(base_path), model_name=MODEL_NAME, port=0, poll_interval_s=0.1,
                              grace_s=1.0, **overrides)  # fmt: skip
        server = ModelServer(config)
        port = server.start()
        servers.append(server)
        return server, f"127.0.0.1:{port}"

    yield start
    for server in servers:
        server.stop(grace=0)


@dataclass(frozen=True)
class Endpoint:
    """Where the conformance tests send requests; `export` is the SavedModel served (None when remote)."""

    address: str
    model_name: str
    export: Path | None
    version: int | None


@pytest.fixture(scope="session")
def endpoint(tmp_path_factory, exports, start_server) -> Endpoint:
    if REMOTE_ADDRESS:
        return Endpoint(REMOTE_ADDRESS, REMOTE_MODEL_NAME, None, None)
    from serving.push import push

    base = tmp_path_factory.mktemp("conformance_models")
    version = push(exports.good[0.0], base, MODEL_NAME)
    _, address = start_server(base, version_labels={"stable": version, "missing": 42})
    return Endpoint(address, MODEL_NAME, exports.good[0.0], version)
