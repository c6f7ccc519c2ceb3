"""The stages of one nightly run, as plain functions of (config, ds) that the DAG's tasks call.

Each stage reads what the stage before it left in the run directory `artifacts/runs/<ds>/` and writes its own
outputs there, so a task can be retried or a date re-run without redoing (or re-pushing) finished work.
The run for logical date `ds` trains on every rating event strictly before `ds` 00:00 UTC.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

logger = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """The training snapshot failed its Great Expectations suite; nothing downstream may run."""


@dataclass(frozen=True)
class PipelineConfig:
    """Where a run reads and writes, and the gates it applies.

    Attributes:
        home: project root.
        source: `"movielens"` (MovieLens-100K, fetched at set-up) or `"synthetic"` (small generated data).
        feature_repo: the Feast repository folder.
        data_cache: folder of the verified MovieLens download.
        artifacts: folder holding `runs/<ds>/` and the `latest` link.
        model_base_path: TF Serving model base path; versions go to `<base>/<model_name>/<n>/`.
        model_name: served model name.
        auc_floor: a candidate below this test AUC is never pushed.
        auc_tolerance: a candidate may trail the serving model's AUC by at most this much.
        epochs: maximum training epochs (early stopping usually ends sooner).
        allow_signature_change: bless a candidate whose `serving_default` signature differs from the serving
            model's (a deliberate spec change); its AUC is then not compared with the serving model's.
    """

    home: Path
    source: str = "movielens"
    feature_repo: Path | None = None
    data_cache: Path | None = None
    artifacts: Path | None = None
    model_base_path: Path | None = None
    model_name: str = "deepfm"
    auc_floor: float = 0.6
    auc_tolerance: float = 0.01
    epochs: int = 10
    allow_signature_change: bool = False

    def __post_init__(self) -> None:
        if self.source not in ("movielens", "synthetic"):
            raise ValueError(f"`source` must be 'movielens' or 'synthetic'. Received: `source={self.source!r}`")
        defaults = {
            "feature_repo": self.home / "feature_repo",
            "data_cache": self.home / "data" / "movielens",
            "artifacts": self.home / "artifacts",
            "model_base_path": self.home / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)

    @classmethod
    def from_env(cls, home: Path) -> PipelineConfig:
        """Config from `DEEPFM_*` environment variables, for the DAG and command lines only."""
        env = os.environ

        def path(name: str) -> Path | None:
            return Path(env[name]) if name in env else None

        return cls(
            home=home,
            source=env.get("DEEPFM_SOURCE", "movielens"),
            feature_repo=path("DEEPFM_FEATURE_REPO"),
            data_cache=path("DEEPFM_DATA_CACHE"),
            artifacts=path("DEEPFM_ARTIFACTS"),
            model_base_path=path("DEEPFM_MODEL_BASE_PATH"),
            auc_floor=float(env.get("DEEPFM_AUC_FLOOR", cls.auc_floor)),
            epochs=int(env.get("DEEPFM_EPOCHS", cls.epochs)),
            allow_signature_change=env.get("DEEPFM_ALLOW_SIGNATURE_CHANGE", "").lower() in ("1", "true", "yes"),
        )

    def run_dir(self, ds: str) -> Path:
        """The run directory of logical date `ds` (YYYY-MM-DD)."""
        return self.artifacts / "runs" / ds


def _cutoff(ds: str) -> pd.Timestamp:
    return pd.Timestamp(ds, tz="UTC").normalize()


def _write_json(path: Path, payload: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_suffix(".partial")
    staged.write_text(json.dumps(payload, indent=2, default=str))
    staged.replace(path)


def _read_json(path: Path) -> dict | None:
    return json.loads(path.read_text()) if path.exists() else None


def load_raw(config: PipelineConfig):
    """The raw tables of the configured source."""
    if config.source == "synthetic":
        from deepfm_model import synthetic

        return synthetic.generate()
    from feature_repo import movielens

    return movielens.load(config.data_cache)


def _last_day(ds: str) -> pd.Timestamp:
    """The last full day of data the run for `ds` may see: the day before `ds`."""
    return _cutoff(ds) - pd.Timedelta(days=1)


def ingest(config: PipelineConfig, ds: str) -> dict:
    """Write the Feast sources and the labelled events of every rating strictly before `ds` 00:00 UTC."""
    from feature_repo import ingest as feature_ingest
    from feature_repo import store as feature_store
    from feature_repo import validation

    raw = load_raw(config).events_before(_cutoff(ds))
    if raw.events.empty:
        raise ValueError(f"No rating events before {ds}: nothing to train on")
    run_dir = config.run_dir(ds)
    run_dir.mkdir(parents=True, exist_ok=True)
    report = validation.validate_sources(raw, _last_day(ds), run_dir / "validation" / "sources", now=_cutoff(ds))
    _write_json(run_dir / "validation" / "sources.json", _report_dict(report))
    logger.info("Great Expectations Data Docs (sources): %s", report.docs_path)
    if not report.success:
        raise ValidationFailed(report.summary)
    paths = feature_ingest.write_sources(raw, _last_day(ds), feature_store.data_dir(config.feature_repo))
    events = feature_ingest.labelled_events(raw, end=_cutoff(ds))
    events.to_parquet(run_dir / "events.parquet", index=False)
    summary = {"events": len(events), "users": len(raw.users), "movies": len(raw.movies)}
    logger.info("Ingested %s; sources: %s", summary, {view: str(path) for view, path in paths.items()})
    return summary


def update_feature_store(config: PipelineConfig, ds: str) -> dict:
    """`feast apply` and materialize this run's window (the day before `ds`) into the online store."""
    from feature_repo import ingest as feature_ingest
    from feature_repo import store as feature_store

    store = feature_store.open_store(config.feature_repo)
    feature_store.apply(store)
    start, end = feature_ingest.day_start(_last_day(ds)), _cutoff(ds)
    feature_store.materialize(store, start, end)
    logger.info("Materialized [%s, %s] into the online store", start, end)
    return {"materialized_start": str(start), "materialized_end": str(end)}


def check_skew(config: PipelineConfig, ds: str, sample_size: int = 200) -> dict:
    """Online feature vectors of sampled (user, movie) pairs must equal the offline point-in-time values."""
    from feature_repo import store as feature_store
    from feature_repo.skew import skew_report

    report = skew_report(
        feature_store.open_store(config.feature_repo), sample_size, as_of=_cutoff(ds) + pd.Timedelta(hours=1)
    )
    _write_json(config.run_dir(ds) / "skew.json", report)
    if not report["ok"]:
        raise RuntimeError(
            f"Online/offline skew in {report['mismatched_pairs']} of {report['pairs']} pairs; "
            f"see {config.run_dir(ds) / 'skew.json'}"
        )
    logger.info("No online/offline skew in %d sampled pairs", report["pairs"])
    return {k: report[k] for k in ("ok", "pairs", "mismatched_pairs")}


def build_training_set(config: PipelineConfig, ds: str) -> dict:
    """Point-in-time training set from Feast, split by time into snapshot/{train,valid,test}.parquet."""
    from feature_repo import store as feature_store

    snapshot_dir = config.run_dir(ds) / "snapshot"
    events = pd.read_parquet(config.run_dir(ds) / "events.parquet")
    frame = feature_store.training_frame(feature_store.open_store(config.feature_repo), events)
    snapshot_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, split in zip(("train", "valid", "test"), feature_store.split_by_time(frame), strict=True):
        split.to_parquet(snapshot_dir / f"{name}.parquet", index=False)
        rows[f"{name}_rows"] = len(split)
    logger.info("Training snapshot in %s: %s", snapshot_dir, rows)
    return rows


def _report_dict(report) -> dict:
    return {
        "success": report.success,
        "evaluated": report.evaluated,
        "failures": list(report.failures),
        "data_docs": str(report.docs_path),
    }


def _previous_reference(config: PipelineConfig, ds: str) -> Path | None:
    """Reference stats of the newest accepted snapshot of an earlier date, if any."""
    earlier = sorted(
        p for p in (config.artifacts / "runs").glob("*/validation/reference.json") if p.parent.parent.name < ds
    )
    return earlier[-1] if earlier else None


def validate(config: PipelineConfig, ds: str) -> dict:
    """Run the Great Expectations suite on the whole snapshot; raise `ValidationFailed` on any failure.

    Row count, label rate and feature distributions are compared with the previous accepted snapshot; an
    accepted snapshot records its own reference stats for the next run.
    """
    from feature_repo import validation

    run_dir = config.run_dir(ds)
    frame = pd.concat([pd.read_parquet(run_dir / "snapshot" / f"{s}.parquet") for s in ("train", "valid", "test")])
    reference = _previous_reference(config, ds)
    report = validation.validate_snapshot(frame, run_dir / "validation", reference=reference)
    result = {**_report_dict(report), "reference": str(reference) if reference else None}
    _write_json(run_dir / "validation" / "result.json", result)
    logger.info("Great Expectations Data Docs: %s", report.docs_path)
    if not report.success:
        raise ValidationFailed(report.summary)
    validation.record_reference(frame, run_dir / "validation" / "reference.json")
    logger.info("Validation passed: %d expectations (reference: %s)", report.evaluated, reference)
    return result


def train(config: PipelineConfig, ds: str) -> dict:
    """Train the DeepFM on the validated snapshot; metrics, report, model and export go to `model/`."""
    from deepfm_model.config import TrainConfig
    from deepfm_model.train import run_training

    run_dir = config.run_dir(ds)
    if not (_read_json(run_dir / "validation" / "result.json") or {}).get("success"):
        raise ValidationFailed(f"The snapshot of {ds} has not passed validation; refusing to train")
    snapshot = run_dir / "snapshot"
    done = _read_json(run_dir / "model" / "metrics.json")
    if done is not None and (run_dir / "model" / "export" / "saved_model.pb").is_file():
        logger.info("Run %s already trained a model; reusing it (delete %s to retrain)", ds, run_dir / "model")
        return {k: done[k] for k in ("test_auc", "test_logloss", "valid_auc")}
    metrics = run_training(
        snapshot / "train.parquet",
        snapshot / "valid.parquet",
        snapshot / "test.parquet",
        run_dir / "model",
        train_config=TrainConfig(epochs=config.epochs),
    )
    _update_metrics(run_dir, model_version=None)
    _link_latest(config, ds)
    logger.info("Model report: %s", run_dir / "model" / "report" / "index.html")
    return {k: metrics[k] for k in ("test_auc", "test_logloss", "valid_auc")}


def serving_version(config: PipelineConfig) -> int | None:
    """The version applications get: the `stable` label's, else the newest pushed; `None` before any push."""
    from serving.labels import model_config_path, read_version_config
    from serving.push import list_versions

    versions = list_versions(config.model_base_path, config.model_name)
    if model_config_path(config.model_base_path).exists():
        stable = read_version_config(config.model_base_path, config.model_name).labels.get("stable")
        if stable in versions:
            return stable
    return versions[-1] if versions else None


def _serving_dir(config: PipelineConfig, version: int) -> Path:
    return Path(config.model_base_path) / config.model_name / str(version)


def _serving_auc(config: PipelineConfig, test: pd.DataFrame, version: int) -> float:
    """Test AUC of serving `version` on this run's test split."""
    from deepfm_model.evaluate import roc_auc
    from deepfm_model.predict import predict_saved_model

    return roc_auc(test["label"].to_numpy(), predict_saved_model(_serving_dir(config, version), test))


def bless(config: PipelineConfig, ds: str) -> dict:
    """Compare the candidate with the serving model on the same test split; write `blessing.json`.

    The rules are `blessing.decide`'s; a rejection is a result, never raised.
    """
    from deepfm_model.blessing import Candidate, decide, export_signature, non_finite_losses, signature_diff

    run_dir = config.run_dir(ds)
    metrics = json.loads((run_dir / "model" / "metrics.json").read_text())
    candidate = Candidate(
        auc=metrics.get("test_auc"),
        logloss=metrics.get("test_logloss"),
        non_finite_epochs=non_finite_losses(_read_json(run_dir / "model" / "history.json") or {}),
        signature=export_signature(run_dir / "model" / "export"),
    )
    version = serving_version(config)
    signature_changed = None
    if version is not None and candidate.signature is not None:
        serving_signature = export_signature(_serving_dir(config, version))
        if serving_signature is None:
            signature_changed = {"serving": f"version {version} has no readable serving_default signature"}
        else:
            signature_changed = signature_diff(serving_signature, candidate.signature) or None
    comparable = version is not None and candidate.signature is not None and signature_changed is None
    serving_auc = (
        _serving_auc(config, pd.read_parquet(run_dir / "snapshot" / "test.parquet"), version) if comparable else None
    )
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
    _write_json(run_dir / "blessing.json", blessing)
    logger.info("Blessing: %s", reason)
    return blessing


def push(config: PipelineConfig, ds: str) -> dict:
    """Push a blessed export as the next version, once per `ds`: a re-run returns the version already pushed."""
    from serving.labels import ensure_model_config
    from serving.push import push as push_version

    run_dir = config.run_dir(ds)
    pushed = _read_json(run_dir / "push.json")
    if pushed is not None:
        logger.info("Run %s already pushed version %s; not pushing again", ds, pushed["model_version"])
        return pushed
    blessing = _read_json(run_dir / "blessing.json") or {}
    if not blessing.get("blessed"):
        logger.info("Not pushing: %s", blessing.get("reason", "no blessing"))
        return {"model_version": None, "reason": blessing.get("reason")}
    ensure_model_config(config.model_base_path, config.model_name)
    version = push_version(run_dir / "model" / "export", config.model_base_path, config.model_name)
    pushed = {
        "model_version": version,
        "model_dir": str(Path(config.model_base_path) / config.model_name / str(version)),
    }
    _write_json(run_dir / "push.json", pushed)
    _update_metrics(run_dir, model_version=version)
    logger.info("Pushed version %d to %s", version, pushed["model_dir"])
    return pushed


def _update_metrics(run_dir: Path, **fields) -> None:
    path = run_dir / "model" / "metrics.json"
    _write_json(path, {**json.loads(path.read_text()), **fields})
    _write_json(run_dir / "metrics.json", json.loads(path.read_text()))


def _link_latest(config: PipelineConfig, ds: str) -> None:
    """Point `artifacts/latest` at this run directory (atomically replaced symlink)."""
    latest = config.artifacts / "latest"
    staged = config.artifacts / ".latest.partial"
    staged.unlink(missing_ok=True)
    staged.symlink_to(Path("runs") / ds, target_is_directory=True)
    staged.replace(latest)


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

    run_dir = config.run_dir(ds)
    version = (_read_json(run_dir / "push.json") or {}).get("model_version")
    if version is None:
        logger.info("Nothing pushed for %s; nothing to verify", ds)
        return {"verified": False, "reason": "no push"}
    probe = pd.read_parquet(run_dir / "snapshot" / "test.parquet").head(probe_rows)
    expected = predict_frame(load_trained(run_dir / "model"), probe)
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
            promote(client, config.model_base_path, config.model_name, "stable", version)
    finally:
        server.stop()
    result = {"verified": True, "model_version": version, "probe_rows": len(probe), "max_abs_diff": max_diff}
    _write_json(run_dir / "verify.json", result)
    logger.info(
        "Version %d verified over gRPC on %d probe rows (max |diff| %.2e); labelled stable",
        version,
        len(probe),
        max_diff,
    )
    return result


def wait_available(client, version: int | None = None, deadline_s: float = 300.0) -> int:
    """Poll the server until `version` (or, when `None`, any version) is AVAILABLE; return that version."""
    import time

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
