"""The release task group: bless the candidate against the serving model, push it, verify it on a server.

A rejection is a result (`blessed: false` with a reason), never an exception; a version that fails
verification is retracted and `stable` stays where it was.
"""

from __future__ import annotations

import logging
import time

import pandas as pd

from dags.pipeline.blessing import Candidate, decide, non_finite_losses
from dags.pipeline.config import PipelineConfig
from dags.pipeline.training import update_metrics
from deepfm_model.spec.files import read_json, write_json

logger = logging.getLogger(__name__)

STABLE_LABEL = "stable"


def serving_version(config: PipelineConfig) -> int | None:
    """The version applications get: the `stable` label's, else the newest pushed; `None` before any push."""
    from serving.labels import model_config_path, read_version_config
    from serving.push import list_versions

    versions = list_versions(config.model_base_path, config.model_name)
    if model_config_path(config.model_base_path).exists():
        stable = read_version_config(config.model_base_path, config.model_name).labels.get(STABLE_LABEL)
        if stable in versions:
            return stable
    return versions[-1] if versions else None


def _serving_auc(config: PipelineConfig, test: pd.DataFrame, version: int) -> float:
    """Test AUC of serving `version` on this run's test split."""
    from deepfm_model.evaluate import roc_auc
    from deepfm_model.predict import predict_saved_model
    from deepfm_model.spec.features import LABEL

    return roc_auc(test[LABEL].to_numpy(), predict_saved_model(config.version_dir(version), test))


def bless(config: PipelineConfig, ds: str) -> dict:
    """Compare the candidate with the serving model on the same test split; write the run's blessing.

    The rules are `blessing.decide`'s; a rejection is a result, never raised.
    """
    from deepfm_model.signature import export_signature, signature_diff

    run = config.run_dir(ds)
    metrics = read_json(run.model_metrics)
    candidate = Candidate(
        auc=metrics.get("test_auc"),
        logloss=metrics.get("test_logloss"),
        non_finite_epochs=non_finite_losses(read_json(run.history) or {}),
        signature=export_signature(run.export_dir),
    )
    version = serving_version(config)
    signature_changed = None
    if version is not None and candidate.signature is not None:
        serving_signature = export_signature(config.version_dir(version))
        if serving_signature is None:
            signature_changed = {"serving": f"version {version} has no readable serving_default signature"}
        else:
            signature_changed = signature_diff(serving_signature, candidate.signature) or None
    comparable = version is not None and candidate.signature is not None and signature_changed is None
    serving_auc = _serving_auc(config, pd.read_parquet(run.split("test")), version) if comparable else None
    blessed, reason = decide(
        candidate,
        serving_version=version,
        serving_auc=serving_auc,
        signature_changed=signature_changed,
        auc_floor=config.auc_floor,
        auc_tolerance=config.auc_tolerance,
        allow_signature_change=config.allow_signature_change,
    )
    blessing = {
        "blessed": blessed,
        "reason": reason,
        "candidate_auc": candidate.auc,
        "serving_version": version,
        "serving_auc": serving_auc,
        "signature_changed": signature_changed,
    }
    write_json(run.blessing, blessing)
    logger.info("Blessing: %s", reason)
    return blessing


def push(config: PipelineConfig, ds: str) -> dict:
    """Push a blessed export as the next version, once per `ds`: a re-run returns the version already pushed."""
    from serving.labels import ensure_model_config
    from serving.push import push as push_version

    run = config.run_dir(ds)
    pushed = read_json(run.push)
    if pushed is not None:
        logger.info("Run %s already pushed version %s; not pushing again", ds, pushed["model_version"])
        return pushed
    blessing = read_json(run.blessing) or {}
    if not blessing.get("blessed"):
        logger.info("Not pushing: %s", blessing.get("reason", "no blessing"))
        return {"model_version": None, "reason": blessing.get("reason")}
    ensure_model_config(config.model_base_path, config.model_name)
    version = push_version(run.export_dir, config.model_base_path, config.model_name)
    pushed = {"model_version": version, "model_dir": str(config.version_dir(version))}
    write_json(run.push, pushed)
    update_metrics(config, ds, model_version=version)
    logger.info("Pushed version %d to %s", version, pushed["model_dir"])
    return pushed


def verify_serving(config: PipelineConfig, ds: str, probe_rows: int = 64, deadline_s: float = 300.0) -> dict:
    """Serve the pushed version, compare probe predictions with in-process ones, then label it `stable`.

    A version that does not load or answers differently is retracted from the base path (servers unload it on
    their next poll) and `stable` stays where it was; the task then fails with the reason.
    """
    import numpy as np

    from deepfm_model.predict import load_trained, predict_frame
    from deepfm_model.spec.features import FEATURE_NAMES
    from serving.client import ServingClient
    from serving.labels import model_config_path, promote
    from serving.push import retract
    from serving.server import ModelServer, ServerConfig

    run = config.run_dir(ds)
    version = (read_json(run.push) or {}).get("model_version")
    if version is None:
        logger.info("Nothing pushed for %s; nothing to verify", ds)
        return {"verified": False, "reason": "no push"}
    probe = pd.read_parquet(run.split("test")).head(probe_rows)
    expected = predict_frame(load_trained(run.model_dir), probe)
    config_file = model_config_path(config.model_base_path)
    server = ModelServer(ServerConfig.from_model_config_file(config_file, port=0, poll_interval_s=0.5))
    port = server.start()
    try:
        with ServingClient(f"127.0.0.1:{port}", model_name=config.model_name, version=version) as client:
            try:
                wait_available(client, version, deadline_s)
                served = client.predict({name: probe[name].to_numpy() for name in FEATURE_NAMES})
                max_diff = float(np.max(np.abs(served - expected)))
                if not max_diff <= 1e-5:
                    raise RuntimeError(f"version {version} serves predictions {max_diff:.2e} away from in-process")
            except Exception:
                retract(config.model_base_path, config.model_name, version)
                raise
            promote(client, config.model_base_path, config.model_name, STABLE_LABEL, version)
    finally:
        server.stop()
    result = {"verified": True, "model_version": version, "probe_rows": len(probe), "max_abs_diff": max_diff}
    write_json(run.verify, result)
    logger.info(
        "Version %d verified over gRPC on %d probe rows (max |diff| %.2e); labelled %s",
        version, len(probe), max_diff, STABLE_LABEL,
    )  # fmt: skip
    return result


def wait_available(client, version: int | None = None, deadline_s: float = 300.0) -> int:
    """Poll the server until `version` (or, when `None`, any version) is AVAILABLE; return that version."""
    from serving.client import ServingError

    deadline = time.monotonic() + deadline_s
    while True:
        try:
            available = [s.version for s in client.model_status() if s.state == "AVAILABLE"]
        except ServingError as error:
            if time.monotonic() > deadline:
                raise
            logger.debug("server not ready yet: %s", error)
            available = []
        if version is None and available:
            return max(available)
        if version in available:
            return version
        if time.monotonic() > deadline:
            raise TimeoutError(f"Version {version} did not become AVAILABLE within {deadline_s:.0f} s")
        time.sleep(0.5)
