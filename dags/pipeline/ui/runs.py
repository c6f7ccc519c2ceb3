"""What a run directory says about its run, joined with its DagRun: the rows of the dashboard and of the JSON API.

Every file is found through `RunDir`; nothing here writes. A run the validation gate stopped has a
`validation/sources.json` or `validation/result.json` with `success: false`; its failures are the reason shown.
A run's full-catalogue top-N evaluation is `full_ranking` in its `metrics.json` (see `deepfm_model.topn_report`);
runs made before it have none (`None` here).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import threading
from collections.abc import Mapping
from pathlib import Path

from dags.pipeline.config import PipelineConfig
from dags.pipeline.run_dir import RUNS_DIR, RunDir
from dags.pipeline.ui.dag_runs import DagRunRecord
from deepfm_model.layout import SPLITS
from deepfm_model.spec.dates import check_ds
from deepfm_model.spec.files import read_json
from deepfm_model.topn_report import (
    FULL_RANKING_IMAGE,
    FULL_RANKING_TITLE,
    METRICS,
    SERVED_MODELS,
    details,
    finite,
    interval,
    models_of,
)

logger = logging.getLogger(__name__)

REPORT_IMAGES = (".png", ".svg")
# Captions that the file name does not spell (`learning_curves` does).
REPORT_TITLES = {"roc": "ROC curve", Path(FULL_RANKING_IMAGE).stem: FULL_RANKING_TITLE}
DRIFT_RECOMPUTE_MAX_ROWS = 1_000_000  # a snapshot up to this size has its drift recomputed when none was recorded
SPLIT_METRICS = ("auc", "logloss", "mean_prediction", "positive_rate", "rows")  # the run page's table, per split
VALIDATION_STAGES = {"sources": "Source", "snapshot": "Snapshot"}  # key in the API -> the suite's title
FULL_RANKING_KEY = "full_ranking"  # in metrics.json: the full-catalogue top-N evaluation
HEADLINE_METRIC = "ndcg_at_10"  # the dashboard rows' full-catalogue metric (and `plot.full_ranking_svg`'s)


def run_dates(config: PipelineConfig) -> list[str]:
    """The logical dates that have a run directory, newest first (folders not named as a date are ignored)."""
    runs = Path(config.artifacts) / RUNS_DIR
    if not runs.is_dir():
        return []
    dates = []
    for path in runs.iterdir():
        try:
            check_ds(path.name)
        except ValueError:
            continue
        if path.is_dir():
            dates.append(path.name)
    return sorted(dates, reverse=True)


def list_runs(config: PipelineConfig, dag_runs: Mapping[str, DagRunRecord]) -> list[dict]:
    """One summary per logical date that has a DagRun or a run directory, newest first."""
    dates = sorted(set(dag_runs) | set(run_dates(config)), reverse=True)
    return [run_summary(config, ds, dag_runs.get(ds)) for ds in dates]


def run_summary(config: PipelineConfig, ds: str, dag_run: DagRunRecord | None) -> dict:
    """The dashboard row of the run of `ds`: state, rows, validation, drift, metrics, blessing, push."""
    run = config.run_dir(ds)
    validation = {key: _validation(run, key) for key in VALIDATION_STAGES}
    ran = [stage for stage in validation.values() if stage is not None]
    metrics = read_json(run.metrics) or read_json(run.model_metrics) or {}
    blessing = read_json(run.blessing)
    pushed = read_json(run.push) or {}
    verify = read_json(run.verify)
    skew = read_json(run.skew)
    full_ranking = metrics.get(FULL_RANKING_KEY) if isinstance(metrics.get(FULL_RANKING_KEY), dict) else None
    failures = [
        f"{VALIDATION_STAGES[key]} suite: {failure}"
        for key, stage in validation.items()
        if stage is not None
        for failure in stage["failures"]
    ]
    summary = {
        "ds": ds,
        "run_id": dag_run.run_id if dag_run else None,
        "state": dag_run.state if dag_run else _state_from_files(validation, skew, blessing, verify),
        "run_type": dag_run.run_type if dag_run else None,
        "start_date": _iso(dag_run.start_date) if dag_run else None,
        "end_date": _iso(dag_run.end_date) if dag_run else None,
        "duration_s": dag_run.duration_s if dag_run else None,
        "failed_tasks": list(dag_run.failed_tasks) if dag_run else [],
        "rows": split_rows(run),
        "validation_success": all(stage["success"] for stage in ran) if ran else None,
        "validation": validation,
        "failures": failures,
        "drift": largest_drift(run, validation["snapshot"]),
        "skew_ok": skew.get("ok") if skew else None,
        "test_auc": _finite(metrics.get("test_auc")),
        "test_logloss": _finite(metrics.get("test_logloss")),
        "valid_auc": _finite(metrics.get("valid_auc")),
        "full_ranking": full_ranking,
        "full_ranking_ndcg": full_ranking_headline(full_ranking),
        "blessed": blessing.get("blessed") if blessing else None,
        "blessing_reason": blessing.get("reason") if blessing else None,
        "model_version": pushed.get("model_version"),
        "verified": verify.get("verified") if verify else None,
        "files": run_files(run),
    }
    summary["reason"] = _reason(summary, skew)
    return summary


def run_detail(config: PipelineConfig, ds: str, dag_run: DagRunRecord | None) -> dict:
    """The summary of the run of `ds` and everything its page shows: metrics, blessing, skew, lineage, images."""
    run = config.run_dir(ds)
    report_dir = run.report.parent
    images = []
    if report_dir.is_dir():
        found = [p for p in report_dir.iterdir() if p.suffix in REPORT_IMAGES and p.is_file()]
        for path in sorted(found, key=lambda p: (p.stat().st_mtime_ns, p.name)):  # in the order the report made them
            title = REPORT_TITLES.get(path.stem, path.stem.replace("_", " ").capitalize())
            images.append({"title": title, "path": _relative(run, path), "wide": _is_wide(path)})
    metrics = read_json(run.metrics) or read_json(run.model_metrics)
    in_table = {f"{split}_{name}" for split in SPLITS for name in SPLIT_METRICS} | {"model_version", FULL_RANKING_KEY}
    return {
        **run_summary(config, ds, dag_run),
        "metrics": metrics,
        # Everything else training recorded (ranking metrics, epochs, timing), shown as it is.
        "other_metrics": {k: v for k, v in (metrics or {}).items() if k not in in_table},
        "blessing": read_json(run.blessing),
        "push": read_json(run.push),
        "verify": read_json(run.verify),
        "skew": read_json(run.skew),
        "lineage": read_json(run.lineage),
        "report_images": images,
    }


def full_ranking_headline(full_ranking: dict | None) -> dict | None:
    """The model's full-catalogue NDCG@10 beside the best baseline's, for the dashboard's row.

    The model is `recommend` (what serving returns), else `deepfm`; the best baseline is the model with the highest
    NDCG@10 among the others. `{"model", "value", "ci", "baseline", "baseline_value", "baseline_ci", "beats"}`
    (`beats`: the point estimates compared, `None` without both), or `None` when the run has no such number.
    """
    models = models_of(full_ranking or {})
    scored = {name: finite(model.get(HEADLINE_METRIC)) for name, model in models.items()}
    model = next((name for name in SERVED_MODELS if scored.get(name) is not None), None)
    baselines = {name: value for name, value in scored.items() if name not in SERVED_MODELS and value is not None}
    baseline = max(baselines, key=baselines.get) if baselines else None  # the first of equals
    if model is None and baseline is None:
        return None
    value, baseline_value = scored.get(model), scored.get(baseline)
    return {
        "model": model,
        "value": value,
        "ci": interval(models[model], HEADLINE_METRIC) if model else None,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "baseline_ci": interval(models[baseline], HEADLINE_METRIC) if baseline else None,
        "beats": value > baseline_value if value is not None and baseline_value is not None else None,
    }


def full_ranking_rows(full_ranking: dict | None) -> list[dict]:
    """The full-catalogue table of a run page, one row per model in the recorded order.

    Each row: `model`, `served` (the model, not a baseline), `metrics` (key -> `{"title", "value", "ci"}`, values
    finite or `None`) and `details` (a baseline's params, the served model's retrieval facts).
    """
    return [
        {
            "model": name,
            "served": name in SERVED_MODELS,
            "metrics": {
                key: {"title": title, "value": finite(model.get(key)), "ci": interval(model, key)}
                for key, title in METRICS
            },
            "details": details(model),
        }
        for name, model in models_of(full_ranking or {}).items()
    ]


def split_rows(run: RunDir) -> dict[str, int] | None:
    """Rows of each snapshot split (from the parquet footers), `None` before the snapshot exists."""
    import pyarrow.parquet as pq

    rows = {}
    for name in SPLITS:
        path = run.split(name)
        if path.is_file():
            try:
                rows[name] = pq.ParquetFile(path).metadata.num_rows
            except (OSError, ValueError) as error:
                logger.warning("Unreadable snapshot split %s: %s", path, error)
    return rows or None


def run_files(run: RunDir) -> dict[str, str]:
    """The run's reports and records that exist, as paths relative to the run directory (for `/deepfm/runs/...`)."""
    candidates = {
        "report": run.report,
        "snapshot_docs": run.validation_dir / "index.html",
        "sources_docs": run.sources_docs_dir / "index.html",
        "metrics": run.metrics,
        "blessing": run.blessing,
        "skew": run.skew,
        "lineage": run.lineage,
        "push": run.push,
        "verify": run.verify,
        "snapshot_result": run.validation_result,
        "sources_result": run.sources_result,
    }
    return {name: _relative(run, path) for name, path in candidates.items() if path.is_file()}


_drift_cache: dict[str, tuple[tuple, dict | None]] = {}  # run root -> (its files' mtimes, its drift)
_drift_lock = threading.Lock()


def largest_drift(run: RunDir, snapshot_validation: dict | None) -> dict | None:
    """`{"feature", "psi", "reference"}` of the key feature that moved most against the reference snapshot.

    `None` when the snapshot was not compared with a reference (the first run). The PSI values are those the
    validation recorded (`psi` in `validation/result.json`) when it did; otherwise the suite's own
    `feature_repo.validation.psi_table` is recomputed from the snapshot and the reference the validation used
    (cached while those files are unchanged), for snapshots of at most `DRIFT_RECOMPUTE_MAX_ROWS` rows: the API
    server does not read a larger one.
    """
    if not snapshot_validation or not snapshot_validation.get("reference_ds"):
        return None
    recorded = snapshot_validation.get("psi")
    if recorded:
        return _largest(recorded, snapshot_validation["reference_ds"])
    reference = RunDir(run.artifacts, snapshot_validation["reference_ds"]).reference
    inputs = [reference, *(run.split(name) for name in SPLITS)]
    try:
        key = tuple(p.stat().st_mtime_ns for p in inputs)
    except FileNotFoundError:
        return None
    with _drift_lock:
        cached = _drift_cache.get(str(run.root))
    if cached is not None and cached[0] == key:
        return cached[1]
    rows = split_rows(run) or {}
    if sum(rows.values()) > DRIFT_RECOMPUTE_MAX_ROWS:
        return None
    import pandas as pd
    import pyarrow.parquet as pq

    from feature_repo.validation import psi_table

    stats = read_json(reference)
    frames = []
    for name in SPLITS:
        path = run.split(name)
        present = [c for c in stats["features"] if c in pq.read_schema(path).names]
        frames.append(pd.read_parquet(path, columns=present))
    psi = psi_table(pd.concat(frames, ignore_index=True), stats).iloc[0]
    drift = _largest({column.removeprefix("psi_"): value for column, value in psi.items()},
                     snapshot_validation["reference_ds"])  # fmt: skip
    with _drift_lock:
        _drift_cache[str(run.root)] = (key, drift)
    return drift


def _largest(psi: Mapping[str, float], reference_ds: str) -> dict | None:
    finite = {
        name: float(value) for name, value in psi.items() if isinstance(value, int | float) and math.isfinite(value)
    }
    if not finite:
        return None
    feature = max(finite, key=finite.get)
    return {"feature": feature, "psi": finite[feature], "reference": reference_ds}


def _validation(run: RunDir, key: str) -> dict | None:
    path = run.sources_result if key == "sources" else run.validation_result
    result = read_json(path)
    if result is None:
        return None
    reference = result.get("reference")
    return {
        "success": bool(result.get("success")),
        "evaluated": result.get("evaluated"),
        "failures": list(result.get("failures") or []),
        # The Data Docs page of this validation, and the accepted run it was compared with, as the run dir sees them.
        "data_docs": _relative_to_run(run, result.get("data_docs")),
        "reference_ds": Path(reference).parent.parent.name if reference else None,
        "psi": result.get("psi"),  # {feature: PSI against the reference}, when the validation recorded it
    }


def _state_from_files(validation: dict, skew: dict | None, blessing: dict | None, verify: dict | None) -> str:
    """A state for a run directory no DagRun describes (run outside Airflow, or its record deleted)."""
    if any(stage is not None and not stage["success"] for stage in validation.values()):
        return "failed"
    if skew is not None and not skew.get("ok"):
        return "failed"
    if (verify or {}).get("verified") or (blessing is not None and not blessing.get("blessed")):
        return "success"
    return "unknown"


def _reason(summary: dict, skew: dict | None) -> str | None:
    """Why the run ended as it did, in one line: the gate that stopped it, else the failed task, else the blessing."""
    for key, title in VALIDATION_STAGES.items():
        stage = summary["validation"][key]
        if stage is not None and not stage["success"]:
            return (
                f"Stopped by bad data: {title.lower()} validation failed "
                f"{len(stage['failures'])} of {stage['evaluated']} expectations"
            )
    if skew is not None and not skew.get("ok"):
        return f"Stopped by online/offline skew in {skew.get('mismatched_pairs')} of {skew.get('pairs')} sampled pairs"
    if summary["state"] == "failed":
        tasks = ", ".join(summary["failed_tasks"]) or "a task"
        return f"{tasks} failed" + (f" (blessing: {summary['blessing_reason']})" if summary["blessing_reason"] else "")
    if summary["blessing_reason"]:
        return ("Blessed: " if summary["blessed"] else "Rejected: ") + summary["blessing_reason"]
    return None


def _is_wide(path: Path) -> bool:
    """Whether a PNG is more than twice as wide as tall (a row of subplots), from its IHDR header."""
    with open(path, "rb") as f:
        header = f.read(24)
    if len(header) < 24 or header[:8] != b"\x89PNG\r\n\x1a\n":
        return False
    width, height = int.from_bytes(header[16:20], "big"), int.from_bytes(header[20:24], "big")
    return height > 0 and width / height > 2


def _relative(run: RunDir, path: Path) -> str:
    return Path(path).relative_to(run.root).as_posix()


def _relative_to_run(run: RunDir, recorded: str | None) -> str | None:
    """A path a stage recorded (absolute, on the worker that wrote it) as a path inside this run directory.

    Workers and the API server may mount the artifacts at different places, so the part after `runs/<ds>/` is
    what counts; `None` when the recorded path lies elsewhere or the file is not here.
    """
    if not recorded:
        return None
    parts = Path(recorded).parts
    for i in range(len(parts) - 1):
        if parts[i] == RUNS_DIR and parts[i + 1] == run.ds:
            relative = Path(*parts[i + 2 :]) if len(parts) > i + 2 else None
            if relative is not None and (run.root / relative).is_file():
                return relative.as_posix()
    return None


def _finite(value) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _iso(stamp: dt.datetime | None) -> str | None:
    return stamp.isoformat() if stamp is not None else None
