"""The features task group: raw sources validated and written, the Feast store updated, skew checked, the
point-in-time training snapshot built.

Each stage is a plain function of `(config, ds)`; it reads what the stage before left in the run directory and
writes its own outputs there (`RunDir`), so a task can be retried or a date re-run.
"""

from __future__ import annotations

import logging

import pandas as pd

from dags.pipeline.config import PipelineConfig, check_reachable
from deepfm_model.layout import SPLITS
from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.spec.files import write_json

logger = logging.getLogger(__name__)


class ValidationFailed(RuntimeError):
    """A Great Expectations suite failed; nothing downstream may run."""


def report_dict(report) -> dict:
    """The JSON form of a `feature_repo.validation.ValidationReport`."""
    return {
        "success": report.success,
        "evaluated": report.evaluated,
        "failures": list(report.failures),
        "data_docs": str(report.docs_path),
    }


def ingest(config: PipelineConfig, ds: str) -> dict:
    """Validate the raw tables, then write the Feast sources and the labelled events of every rating before `ds`."""
    from feature_repo import ingest as feature_ingest
    from feature_repo import store as feature_store
    from feature_repo import validation

    check_reachable(config)
    run = config.run_dir(ds)
    raw = config.load_raw().events_before(data_cutoff(ds))
    if raw.events.empty:
        raise ValueError(f"No rating events before {ds}: nothing to train on")
    report = validation.validate_sources(raw, ds, run.sources_docs_dir, now=data_cutoff(ds))
    write_json(run.sources_result, report_dict(report))
    logger.info("Great Expectations Data Docs (sources): %s", report.docs_path)
    if not report.success:
        raise ValidationFailed(report.summary)
    paths = feature_ingest.write_sources(raw, ds, feature_store.data_dir(config.feature_repo))
    events = feature_ingest.labelled_events(raw, end=data_cutoff(ds))
    events.to_parquet(run.events, index=False)
    summary = {"events": len(events), "users": len(raw.users), "movies": len(raw.movies)}
    logger.info("Ingested %s; sources: %s", summary, {view: str(path) for view, path in paths.items()})
    return summary


def update_feature_store(config: PipelineConfig, ds: str) -> dict:
    """`feast apply` and materialize this run's window (the last day of data before `ds`) into the online store."""
    from feature_repo import store as feature_store

    store = config.feature_store()
    feature_store.apply(store)
    start, end = last_data_day(ds), data_cutoff(ds)
    feature_store.materialize(store, start, end)
    logger.info("Materialized [%s, %s] into the online store", start, end)
    return {"materialized_start": str(start), "materialized_end": str(end)}


def check_skew(config: PipelineConfig, ds: str, sample_size: int = 200) -> dict:
    """Online feature vectors of sampled (user, movie) pairs must equal the offline point-in-time values."""
    from feature_repo.skew import skew_report

    run = config.run_dir(ds)
    store = config.feature_store()
    report = skew_report(store, sample_size, as_of=data_cutoff(ds) + pd.Timedelta(hours=1))
    write_json(run.skew, report)
    if not report["ok"]:
        raise RuntimeError(
            f"Online/offline skew in {report['mismatched_pairs']} of {report['pairs']} pairs; see {run.skew}"
        )
    logger.info("No online/offline skew in %d sampled pairs", report["pairs"])
    return {k: report[k] for k in ("ok", "pairs", "mismatched_pairs")}


def build_training_set(config: PipelineConfig, ds: str) -> dict:
    """Point-in-time training set from Feast, split by time into the snapshot's train, valid and test files."""
    from feature_repo import store as feature_store

    run = config.run_dir(ds)
    events = pd.read_parquet(run.events)
    frame = feature_store.training_frame(config.feature_store(), events)
    run.snapshot_dir.mkdir(parents=True, exist_ok=True)
    rows = {}
    for name, split in zip(SPLITS, feature_store.split_by_time(frame), strict=True):
        split.to_parquet(run.split(name), index=False)
        rows[f"{name}_rows"] = len(split)
    logger.info("Training snapshot in %s: %s", run.snapshot_dir, rows)
    return rows
