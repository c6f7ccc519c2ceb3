"""The serving tier as the release stage sees it: every configured replica, asked over TF Serving's gRPC API.

Nothing here starts a server: the replicas are whatever answers at `PipelineConfig.serving_addresses` (real TF
Serving in `docker/`, `serving.server` processes locally). A version is verified when every replica reports it
AVAILABLE (GetModelStatus) and answers probe rows as the in-process model does; a label has moved when every
replica resolves it to the version (GetModelMetadata with the label).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

logger = logging.getLogger(__name__)

POLL_S = 0.5
MAX_ABS_DIFF = 1e-5  # a replica's probability may differ from the in-process one by at most this


class ReplicaFailed(RuntimeError):
    """Some replicas did not verify; `failures` maps each address to why."""

    def __init__(self, version: int, failures: Mapping[str, str]) -> None:
        self.failures = dict(failures)
        detail = "; ".join(f"{address}: {why}" for address, why in self.failures.items())
        super().__init__(f"Version {version} failed on {len(self.failures)} serving replica(s): {detail}")


@dataclass(frozen=True)
class ReplicaCheck:
    """What one replica answered for the probe rows."""

    address: str
    max_abs_diff: float


class VersionFailedToLoad(RuntimeError):
    """The server reports the version END with a load error: waiting longer would not change it."""


def wait_available(client, version: int | None = None, deadline_s: float = 300.0) -> int:
    """Poll one server until `version` (or, when `None`, any version) is AVAILABLE; return that version.

    Raises:
        VersionFailedToLoad: the server reports `version` END with an error (it never retries a failed load).
        TimeoutError: not AVAILABLE by the deadline.
    """
    from serving.client import ServingError

    deadline = time.monotonic() + deadline_s
    unanswered = 0
    while True:
        try:
            statuses = client.model_status()
        except ServingError as error:
            if time.monotonic() > deadline:
                raise
            unanswered += 1
            log = logger.info if unanswered == 1 else logger.debug  # once per wait: an operator sees the wait
            log("%s not ready yet (asking again for %.0f s): %s", client.address, deadline - time.monotonic(), error)
            statuses = []
        available = [s.version for s in statuses if s.state == "AVAILABLE"]
        if version is None and available:
            return max(available)
        if version in available:
            return version
        failed = [s for s in statuses if s.version == version and s.state == "END" and s.error_code]
        if failed:
            raise VersionFailedToLoad(f"version {version} failed to load: {failed[0].error_message}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"version {version} did not become AVAILABLE within {deadline_s:.0f} s")
        time.sleep(POLL_S)


def verify_replicas(
    addresses: Sequence[str],
    model_name: str,
    version: int,
    probe: Mapping[str, np.ndarray],
    expected: np.ndarray,
    deadline_s: float,
) -> list[ReplicaCheck]:
    """Every replica serves `version` and answers `probe` with `expected`; raise `ReplicaFailed` otherwise.

    All replicas are checked (in turn, under one shared deadline) before failing, so the error names each one
    that failed and why. A replica that cannot be reached (gRPC UNAVAILABLE: restarting, or not up yet) is asked
    again until the deadline; what it answers is final.
    """
    from serving.client import ServingError

    deadline = time.monotonic() + deadline_s
    checks, failures = [], {}
    for address in addresses:
        try:
            served = _answer(address, model_name, version, probe, deadline)
            max_diff = float(np.max(np.abs(served - expected)))
            if not max_diff <= MAX_ABS_DIFF:
                failures[address] = f"predictions {max_diff:.2e} away from the in-process model"
            else:
                checks.append(ReplicaCheck(address, max_diff))
        except (ServingError, TimeoutError, VersionFailedToLoad) as error:
            failures[address] = str(error).strip().splitlines()[0]
    if failures:
        raise ReplicaFailed(version, failures)
    return checks


def _answer(
    address: str, model_name: str, version: int, probe: Mapping[str, np.ndarray], deadline: float
) -> np.ndarray:
    """The replica's probabilities for `probe` from `version` once it is AVAILABLE; asked again while unreachable."""
    import grpc

    from serving.client import ServingClient, ServingError

    while True:
        try:
            with ServingClient(address, model_name=model_name, version=version, max_retries=0) as client:
                wait_available(client, version, max(deadline - time.monotonic(), 0.0))
                return client.predict(probe)
        except ServingError as error:
            if error.code is not grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            logger.warning("%s unreachable while verifying version %d; asking again: %s", address, version, error)
            time.sleep(POLL_S)


def wait_label(addresses: Sequence[str], model_name: str, label: str, version: int, deadline_s: float) -> None:
    """Wait until every replica resolves `label` to `version` (it re-reads its model config on its own poll)."""
    from serving.client import ServingClient, ServingError

    deadline = time.monotonic() + deadline_s
    pending = list(addresses)
    while pending:
        address = pending[0]
        with ServingClient(address, model_name=model_name, version_label=label, max_retries=0) as client:
            try:
                resolved = client.metadata().version
            except ServingError as error:
                resolved, why = None, str(error)
            else:
                why = f"resolves it to version {resolved}"
        if resolved == version:
            pending.pop(0)
            continue
        if time.monotonic() > deadline:
            raise ReplicaFailed(version, {address: f"label {label!r} not on version {version} in time: {why}"})
        time.sleep(POLL_S)
