"""The features task group: raw sources validated and written, the Feast store updated, skew checked, the
point-in-time training snapshot built.

Each stage is a plain function of `(config, ds)`; it reads what the stage before left in the run directory and
writes its own outputs there (`RunDir`), so a task can be retried or a date re-run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from collections.abc import Iterator

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
    """Check the raw tables, then bring the Feast sources up to date and write the labelled events before `ds`.

    The exact checks (`raw_source.check`: columns, types, every rule of `rules.SOURCE_RULES`) run in SQL over
    every row; the Great Expectations source suite (the same rules, and the day's events) runs on the profiles
    and a sample of events that holds the whole last day. Either failing stops the run before anything is written downstream.
    """
    from feature_repo import ingest as feature_ingest
    from feature_repo import raw_source, validation
    from feature_repo.source_files import data_dir

    check_reachable(config)
    run = config.run_dir(ds)
    cutoff = data_cutoff(ds)
    raw = config.load_raw()
    with feature_connection(config, raw) as con:
        try:
            counts = raw_source.check(con)
        except raw_source.RawSourceError as error:
            write_json(run.sources_result, {"success": False, "evaluated": None, "failures": list(error.problems),
                                            "data_docs": None})  # fmt: skip
            raise ValidationFailed(str(error)) from error
        sample = raw_source.validation_sample(con, cutoff, last_data_day(ds), validation.SAMPLE_ROWS)
        if sample.events.empty:
            raise ValueError(f"No rating events before {ds}: nothing to train on")
        suite = validation.SourceSuiteConfig(known_ids=False)  # `check` compared every event's ids exactly
        report = validation.validate_sources(sample, ds, run.sources_docs_dir, suite, now=cutoff)
        write_json(run.sources_result, report_dict(report))
        logger.info("Great Expectations Data Docs (sources): %s", report.docs_path)
        if not report.success:
            raise ValidationFailed(report.summary)
        paths = feature_ingest.write_sources(con, ds, data_dir(config.feature_repo))
        events = feature_ingest.write_labelled_events(con, ds, run.events)
        record = feature_ingest.write_sampled(con, run.events, config.negatives_per_event, config.sampling_seed,
                                              run.sampled, config.max_sampled_rows)  # fmt: skip
    write_json(run.sampling, dataclasses.asdict(record))
    summary = {"events": events, "users": counts["users"], "movies": counts["movies"], "sampled": record.rows}
    logger.info("Ingested %s; sources: %s", summary, {view: str(path) for view, path in paths.items()})
    return summary


@contextlib.contextmanager
def feature_connection(config: PipelineConfig, raw) -> Iterator:
    """What computes the features over the event history (`config.feature_engine`): a DuckDB connection in this
    process, or a Spark connection (`feature_repo.spark_engine`), over the raw tables as delivered."""
    from feature_repo import raw_source

    if config.feature_engine != "spark":
        with raw_source.connect(raw) as con:
            yield con
        return
    from feature_repo import spark_engine

    with spark_engine.connect(raw, spark_engine.session(config.spark_master, config.spark_conf)) as con:
        yield con


def update_feature_store(config: PipelineConfig, ds: str) -> dict:
    """`feast apply`, materialize this run's window (the last day of data before `ds`) into the online store, and
    push each user's latest fresh-features row (folded by `ingest`) through the push source."""
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
    """Point-in-time training set from Feast, split by time into the snapshot's train, valid and test files.

    The run's labelled events and the sampled rows of each are taken in chunks (`store.write_training_set`), so
    memory holds one chunk; a sampled row goes to the split of its event.
    """
    from feature_repo import store as feature_store

    run = config.run_dir(ds)
    run.snapshot_dir.mkdir(parents=True, exist_ok=True)
    written = feature_store.write_training_set(
        config.feature_store(), run.events, tuple(run.split(name) for name in SPLITS), sampled_path=run.sampled
    )
    rows = {f"{name}_rows": count for name, count in zip(SPLITS, written, strict=True)}
    logger.info("Training snapshot in %s: %s", run.snapshot_dir, rows)
    return rows
