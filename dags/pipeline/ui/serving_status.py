"""The serving tier right now: each configured replica's model versions and states, and what its labels resolve
to, asked live over TF Serving's gRPC API; beside them, the labels the model config file sets.

Replicas are asked in parallel with a short deadline and no retries, so a dead replica costs the page about
`timeout_s`, and is shown as unreachable with the error, never hidden.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dags.pipeline.config import PipelineConfig

logger = logging.getLogger(__name__)

LABELS = ("stable", "canary")  # always asked for, besides any other label the model config sets


def serving_status(config: PipelineConfig, timeout_s: float = 2.0) -> dict:
    """`{"model_name", "config_file", "config_labels", "config_error", "replicas": [...]}`.

    Each replica: `{"address", "reachable", "error", "versions": [{"version", "state", "error"}],
    "labels": {label: version or None}}`.
    """
    config_labels, config_error = None, None
    try:
        config_labels = _config_labels(config)
    except (OSError, ValueError) as error:
        config_error = str(error)
    labels = tuple(dict.fromkeys([*LABELS, *(config_labels or {})]))
    addresses = list(config.serving_addresses)
    with ThreadPoolExecutor(max_workers=min(8, len(addresses))) as pool:
        replicas = list(pool.map(lambda a: replica_status(a, config.model_name, labels, timeout_s), addresses))
    return {
        "model_name": config.model_name,
        "config_file": str(config.model_config_file),
        "config_labels": config_labels,
        "config_error": config_error,
        "replicas": replicas,
    }


def replica_status(address: str, model_name: str, labels: tuple[str, ...], timeout_s: float) -> dict:
    """What the replica at `address` reports: its versions (GetModelStatus) and each label's version."""
    import grpc

    from serving.client import ServingClient, ServingError

    status = {"address": address, "reachable": False, "error": None, "versions": [], "labels": {}}
    try:
        with ServingClient(address, model_name=model_name, timeout=timeout_s, max_retries=0) as client:
            status["versions"] = [
                {"version": v.version, "state": v.state, "error": v.error_message or None}
                for v in client.model_status()
            ]
        status["reachable"] = True
    except ServingError as error:
        status["reachable"] = error.code is not grpc.StatusCode.UNAVAILABLE and error.code is not (
            grpc.StatusCode.DEADLINE_EXCEEDED
        )
        status["error"] = str(error).strip().splitlines()[0]
        return status
    for label in labels:
        with ServingClient(address, model_name=model_name, timeout=timeout_s, max_retries=0,
                           version_label=label) as client:  # fmt: skip
            try:
                status["labels"][label] = client.metadata().version
            except ServingError as error:
                if error.code is not grpc.StatusCode.NOT_FOUND:  # NOT_FOUND: the label is not set
                    logger.warning("Label %s on %s: %s", label, address, error)
                status["labels"][label] = None
    return status


def _config_labels(config: PipelineConfig) -> dict[str, int] | None:
    """Labels in the model config file the replicas poll; `None` before the first push wrote it."""
    from serving.labels import read_version_config

    if not Path(config.model_config_file).exists():
        return None
    version_config = read_version_config(config.model_base_path, config.model_name, config.model_config_file)
    return dict(version_config.labels)
