"""The release task group: bless the candidate against the serving model, push it, verify it on the serving tier.

A rejection is a result (`blessed: false` with a reason), never an exception; a version that fails
verification is retracted and `stable` stays where it was.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from dags.pipeline.blessing import Candidate, decide, non_finite_losses
from dags.pipeline.config import PipelineConfig
from dags.pipeline.lineage import record_lineage, served_lineage, version_of_run
from dags.pipeline.serving_tier import verify_replicas, wait_label
from dags.pipeline.training import update_metrics
from deepfm_model.spec.files import read_json, write_json

logger = logging.getLogger(__name__)

STABLE_LABEL = "stable"


def serving_version(config: PipelineConfig) -> int | None:
    """The version applications get: the `stable` label's, else the newest pushed; `None` before any push."""
    from serving.push import list_versions

    versions = list_versions(config.model_base_path, config.model_name)
    stable = _label(config, STABLE_LABEL)
    if stable in versions:
        return stable
    return versions[-1] if versions else None


def _serving_auc(config: PipelineConfig, test: pd.DataFrame, version: int) -> float:
    """Test AUC of serving `version` on this run's test split: "liked" among the rated rows, scored by its like
    signal (`like`, or `probability` for a one-head model), as the candidate's `test_auc` is."""
    from deepfm_model.evaluate import roc_auc
    from deepfm_model.model import LIKE_OUTPUT
    from deepfm_model.predict import predict_saved_model
    from deepfm_model.spec.features import LABEL, PICKED

    rated = test[test[PICKED] == 1] if PICKED in test else test
    return roc_auc(rated[LABEL].to_numpy(), predict_saved_model(config.version_dir(version), rated, output=LIKE_OUTPUT))


def _versus_serving(config: PipelineConfig, ds: str, version: int) -> tuple[float | None, tuple | None]:
    """Full-catalogue NDCG@10 of serving `version` over this run's ranking candidates (DeepFM over the whole
    catalogue, as the candidate's `deepfm` entry), and the paired 95% interval of candidate minus serving over
    the same users; `(None, None)` when the run has no full-catalogue evaluation."""
    from dags.pipeline.evaluation import ranking_per_user
    from deepfm_model.predict import predict_saved_model
    from deepfm_model.topn import paired_bootstrap

    run = config.run_dir(ds)
    if not run.ranking_candidates.is_file():
        return None, None
    frame = pd.read_parquet(run.ranking_candidates)
    serving = ranking_per_user(frame, predict_saved_model(config.version_dir(version), frame))["ndcg_at_10"]
    candidate = ranking_per_user(frame, predict_saved_model(run.export_dir, frame))["ndcg_at_10"]
    return float(serving.mean()), tuple(paired_bootstrap(candidate, serving)["ci"])


def bless(config: PipelineConfig, ds: str) -> dict:
    """Compare the candidate with the serving model on the same test split; write the run's blessing.

    The rules are `blessing.decide`'s; a rejection is a result, never raised. The run's lineage (feature service,
    suites, snapshot hash, code commit, package versions) is recorded first, so every candidate has one.
    """
    from deepfm_model.signature import export_signature, signature_diff

    run = config.run_dir(ds)
    record_lineage(config, ds)
    metrics = read_json(run.model_metrics)
    ranking = (metrics.get("full_ranking") or {}).get("models", {})
    candidate = Candidate(
        ndcg=(ranking.get("recommend") or {}).get("ndcg_at_10"),
        whole_catalogue_ndcg=(ranking.get("deepfm") or {}).get("ndcg_at_10"),
        popularity_ndcg=(ranking.get("popularity") or {}).get("ndcg_at_10"),
        popularity_gap_ci=tuple(((ranking.get("recommend") or {}).get("vs_popularity") or {}).get("ci") or ()) or None,
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
    serving_ndcg, serving_gap_ci = _versus_serving(config, ds, version) if comparable else (None, None)
    blessed, reason = decide(
        candidate,
        serving_version=version,
        serving_auc=serving_auc,
        serving_ndcg=serving_ndcg,
        serving_gap_ci=serving_gap_ci,
        ndcg_tolerance=config.ndcg_tolerance,
        popularity_tolerance=config.popularity_tolerance,
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
        "candidate_ndcg_at_10": candidate.ndcg,
        "candidate_whole_catalogue_ndcg_at_10": candidate.whole_catalogue_ndcg,
        "popularity_ndcg_at_10": candidate.popularity_ndcg,
        "serving_ndcg_at_10": serving_ndcg,
        "serving_ndcg_gap_ci": serving_gap_ci,
        "signature_changed": signature_changed,
    }
    write_json(run.blessing, blessing)
    logger.info("Blessing: %s", reason)
    return blessing


def push(config: PipelineConfig, ds: str) -> dict:
    """Push a blessed export as the next version, once per `ds`: a re-run returns the version already pushed.

    The version appears with the run's lineage inside it; a try stopped after that but before writing the run's
    push record is found on re-run by that lineage, not pushed twice. A version that `verify_serving` retracted
    (a replica failed it) is no longer pushed: a re-run pushes the export again, as the next version.
    """
    from serving.labels import ensure_model_config
    from serving.push import push as push_version

    run = config.run_dir(ds)
    pushed = read_json(run.push)
    if pushed is not None and config.version_dir(pushed["model_version"]).is_dir():
        logger.info("Run %s already pushed version %s; not pushing again", ds, pushed["model_version"])
        return pushed
    if pushed is not None:
        logger.warning("Version %s of run %s was retracted; pushing the export again", pushed["model_version"], ds)
    blessing = read_json(run.blessing) or {}
    if not blessing.get("blessed"):
        logger.info("Not pushing: %s", blessing.get("reason", "no blessing"))
        return {"model_version": None, "reason": blessing.get("reason")}
    version = version_of_run(config, ds)
    if version is not None:  # an earlier try pushed it and stopped before writing the run's record
        logger.info("Version %d already holds this run's candidate (its lineage says so); not pushing again", version)
    else:
        ensure_model_config(config.model_base_path, config.model_name, config.model_config_file)
        version = push_version(run.export_dir, config.model_base_path, config.model_name,
                               extra_files=served_lineage(config, ds))  # fmt: skip
    pushed = {"model_version": version, "model_dir": str(config.version_dir(version))}
    write_json(run.push, pushed)
    update_metrics(config, ds, model_version=version)
    logger.info("Pushed version %d to %s", version, pushed["model_dir"])
    return pushed


def verify_serving(config: PipelineConfig, ds: str, probe_rows: int = 64, deadline_s: float = 300.0) -> dict:
    """Verify the pushed version on every serving replica, then move `stable` to it on the serving tier.

    Each address of `config.serving_addresses` must report the version AVAILABLE and answer probe rows as the
    in-process model does; then `stable` moves in the model config file the replicas poll, and the stage waits
    until every replica resolves it to the version. If any replica fails, `stable` stays (or is put back) where
    it was, the version is retracted from the base path (the replicas unload it on their next poll), and the
    task fails naming each failed address. No server is started here.
    """
    from deepfm_model.predict import load_trained, predict_frame
    from deepfm_model.spec.features import FEATURE_NAMES
    from serving.labels import set_label
    from serving.push import retract

    run = config.run_dir(ds)
    version = (read_json(run.push) or {}).get("model_version")
    if version is None:
        logger.info("Nothing pushed for %s; nothing to verify", ds)
        return {"verified": False, "reason": "no push"}
    if not config.version_dir(version).is_dir():
        raise RuntimeError(
            f"Version {version} of run {ds} was retracted by an earlier try; re-run push to push it again"
        )
    probe = pd.read_parquet(run.split("test")).head(probe_rows)
    expected = predict_frame(load_trained(run.model_dir), probe)
    columns = {name: probe[name].to_numpy() for name in FEATURE_NAMES}
    addresses = list(config.serving_addresses)
    previous = _label(config, STABLE_LABEL)
    try:
        checks = verify_replicas(addresses, config.model_name, version, columns, expected, deadline_s)
        set_label(config.model_base_path, config.model_name, STABLE_LABEL, version, config.model_config_file)
        wait_label(addresses, config.model_name, STABLE_LABEL, version, deadline_s)
    except Exception:
        if previous is not None and previous != version and _label(config, STABLE_LABEL) == version:
            set_label(config.model_base_path, config.model_name, STABLE_LABEL, previous, config.model_config_file)
        retract(config.model_base_path, config.model_name, version)
        logger.error("Version %d retracted; %s stays on %s", version, STABLE_LABEL, previous)
        raise
    result = {
        "verified": True,
        "model_version": version,
        "probe_rows": len(probe),
        "max_abs_diff": max(check.max_abs_diff for check in checks),
        "serving_addresses": addresses,
        "verified_on": [check.address for check in checks],
        "previous_stable": previous,
    }
    write_json(run.verify, result)
    logger.info(
        "Version %d verified on %s (%d probe rows, max |diff| %.2e); labelled %s",
        version, ", ".join(addresses), len(probe), result["max_abs_diff"], STABLE_LABEL,
    )  # fmt: skip
    return result


def _label(config: PipelineConfig, label: str) -> int | None:
    """The version `label` names in the model config file now; `None` when unset or no file yet."""
    from serving.labels import read_version_config

    if not Path(config.model_config_file).exists():
        return None
    return read_version_config(config.model_base_path, config.model_name, config.model_config_file).labels.get(label)
