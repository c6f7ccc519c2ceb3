"""A small artifacts tree of four nightly runs, shaped as the stages write them, for the dashboard's tests.

| ds | what happened |
| --- | --- |
| 1998-01-28 | trained, blessed, pushed as version 1 |
| 1998-01-29 | trained, rejected (AUC below the floor) |
| 1998-01-30 | trained on a snapshot compared with 1998-01-28's (drift), blessed, pushed as version 2, `stable` |
| 1998-01-31 | stopped by bad data: the source suite failed at ingest |

The runs of 1998-01-29 and 1998-01-30 have a full-catalogue top-N evaluation (`full_ranking` in `metrics.json`);
1998-01-28's predates it. On 01-29 the best baseline (`ease`) beats the model; on 01-30 the model beats every
baseline, a baseline that 01-29 did not have (`slim`) included, and its report has the full-catalogue chart.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pandas as pd

from dags.pipeline.config import PipelineConfig
from dags.pipeline.ui.dag_runs import DagRunRecord
from deepfm_model.spec.files import write_json
from deepfm_model.topn_report import write_full_ranking_report

DATES = ("1998-01-28", "1998-01-29", "1998-01-30", "1998-01-31")
BAD_DATA_DS = DATES[-1]
STABLE_DS, STABLE_VERSION = DATES[2], 2
SOURCE_FAILURES = [
    "events: expect_column_values_to_be_between(on_run_day) failed: 0 events on 1998-01-30",
    "events: expect_column_values_to_not_be_null(user_id) failed: 10 of 5000 rows, e.g. None",
]
AUC = {DATES[0]: 0.7012345, DATES[1]: 0.5512345, DATES[2]: 0.7198765}
LOGLOSS = {DATES[0]: 0.6211, DATES[1]: 0.6801, DATES[2]: 0.6093}
# Full-catalogue NDCG@10 of each model by run, in the order metrics.json lists them (served models first).
FULL_NDCG = {
    DATES[1]: {"recommend": 0.1875, "deepfm": 0.1725, "popularity": 0.1525, "item_knn": 0.1975, "ease": 0.2125},
    DATES[2]: {"recommend": 0.2625, "deepfm": 0.2475, "popularity": 0.1575, "item_knn": 0.2025, "ease": 0.2225,
               "slim": 0.1925},
}  # fmt: skip
BASELINE_PARAMS = {"popularity": {"days": 30, "positives_only": True}, "item_knn": {"neighbours": 50},
                   "ease": {"l2": 200}, "slim": {"l1": 0.1}}  # fmt: skip
# 1x1 white PNG and a 3x1 (wide) one.
PNG_SQUARE = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8ffffff7f0009fb03fd2a86e38a0000000049454e44ae426082"
)
PNG_WIDE = PNG_SQUARE[:16] + (3).to_bytes(4, "big") + (1).to_bytes(4, "big") + PNG_SQUARE[24:]


def snapshot(seed: int, shift: float = 0.0, rows: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "age": rng.normal(32 + shift, 8, rows).clip(7, 73),
            "gender": rng.choice(["M", "F"], rows, p=[0.7, 0.3]),
            "label": rng.integers(0, 2, rows),
        }
    )


def full_ranking(ds: str) -> dict | None:
    """The `full_ranking` of the run of `ds` as the evaluation records it, or `None` for a run without one."""
    if ds not in FULL_NDCG:
        return None
    models = {}
    for name, ndcg in FULL_NDCG[ds].items():
        values = {"ndcg_at_10": ndcg, "recall_at_10": ndcg / 2, "recall_at_50": ndcg * 1.5, "mrr": ndcg * 1.25}
        model = {**values, **{f"{key}_ci": [value - 0.03125, value + 0.03125] for key, value in values.items()}}
        if name == "recommend":
            model.update(retrieval_recall=0.8125, retrieval_cut=300)
        elif name in BASELINE_PARAMS:
            model["params"] = BASELINE_PARAMS[name]
        models[name] = model
    return {"users": 153, "sampled_from": 153,
            "candidates": "every catalogue item the user had not rated before the window",
            "window_start": f"{ds}T00:00:00+00:00", "models": models}  # fmt: skip


def build_runs(config: PipelineConfig) -> None:
    """Write the four runs' files under `config.artifacts`."""
    from feature_repo.validation import record_reference

    for i, ds in enumerate(DATES):
        run = config.run_dir(ds)
        docs = run.sources_docs_dir / "validations" / "source_events" / "__none__" / "x" / "source-events.html"
        docs.parent.mkdir(parents=True, exist_ok=True)
        docs.write_text("<html><body>source docs</body></html>")
        (run.sources_docs_dir / "index.html").write_text("<html><body>source docs site</body></html>")
        if ds == BAD_DATA_DS:
            write_json(run.sources_result, {"success": False, "evaluated": 33, "failures": SOURCE_FAILURES,
                                            "data_docs": f"/elsewhere/runs/{ds}/{docs.relative_to(run.root)}"})  # fmt: skip
            continue
        write_json(run.sources_result, {"success": True, "evaluated": 33, "failures": [], "data_docs": str(docs)})
        run.snapshot_dir.mkdir(parents=True, exist_ok=True)
        frame = snapshot(i, shift=6.0 if ds == STABLE_DS else 0.0)
        for j, name in enumerate(("train", "valid", "test")):
            frame.iloc[j::3].to_parquet(run.split(name), index=False)
        reference = config.run_dir(DATES[0]).reference if ds == STABLE_DS else None
        (run.validation_dir / "validations" / "training_snapshot").mkdir(parents=True, exist_ok=True)
        (run.validation_dir / "index.html").write_text("<html><body>snapshot docs site</body></html>")
        write_json(run.validation_result, {"success": True, "evaluated": 68, "failures": [], "data_docs": None,
                                           "reference": str(reference) if reference else None})  # fmt: skip
        record_reference(frame, run.reference)
        write_json(run.skew, {"ok": True, "as_of": f"{ds}T01:00:00+00:00", "pairs": 200, "mismatched_pairs": 0,
                              "features": {"age": {"mismatches": 0, "online_missing": 0, "max_abs_diff": 0.0,
                                                   "examples": []}}})  # fmt: skip
        metrics = {
            "test_auc": AUC[ds],
            "test_logloss": LOGLOSS[ds],
            "valid_auc": AUC[ds] - 0.01,
            "test_rows": 133,
            "test_ndcg_at_10": 0.3125,
            "epochs_trained": 3,
        }
        if full_ranking(ds) is not None:
            metrics["full_ranking"] = full_ranking(ds)
        write_json(run.model_metrics, metrics)
        run.report.parent.mkdir(parents=True, exist_ok=True)
        (run.report.parent / "roc.png").write_bytes(PNG_SQUARE)
        (run.report.parent / "learning_curves.png").write_bytes(PNG_WIDE)
        run.report.write_text('<html><body><img src="roc.png"></body></html>')
        if ds == STABLE_DS:  # the chart and the report page's section, as the evaluation writes them, made last
            image = write_full_ranking_report(metrics["full_ranking"], run.report.parent)
            later = (run.report.parent / "learning_curves.png").stat().st_mtime_ns + 1_000_000_000
            os.utime(image, ns=(later, later))
        blessed = ds != DATES[1]
        reason = (
            f"candidate AUC {AUC[ds]:.4f} clears the floor 0.6000; no model serving yet"
            if blessed
            else f"candidate AUC {AUC[ds]:.4f} is below the floor 0.6000"
        )
        write_json(run.blessing, {"blessed": blessed, "reason": reason, "candidate_auc": AUC[ds],
                                  "serving_version": None, "serving_auc": None, "signature_changed": None})  # fmt: skip
        version = {DATES[0]: 1, STABLE_DS: STABLE_VERSION}.get(ds)
        write_json(run.metrics, {**metrics, "model_version": version})
        if version is not None:
            write_json(run.push, {"model_version": version, "model_dir": str(config.version_dir(version))})
            write_json(run.verify, {"verified": True, "model_version": version, "probe_rows": 64,
                                    "max_abs_diff": 1e-7, "verified_on": ["127.0.0.1:1"]})  # fmt: skip


def dag_runs() -> dict[str, DagRunRecord]:
    """The DagRuns of the four runs as Airflow would record them."""
    start = dt.datetime(2026, 1, 1, 3, tzinfo=dt.UTC)
    records = {}
    for i, ds in enumerate(DATES):
        failed = ds == BAD_DATA_DS
        records[ds] = DagRunRecord(
            run_id=f"scheduled__{ds}T00:00:00+00:00",
            ds=ds,
            state="failed" if failed else "success",
            run_type="scheduled",
            start_date=start + dt.timedelta(days=i),
            end_date=start + dt.timedelta(days=i, seconds=20 if failed else 425),
            failed_tasks=("features.ingest",) if failed else (),
        )
    return records


def serving(stable: int | None = STABLE_VERSION) -> dict:
    """A serving status with one live replica and one unreachable one."""
    return {
        "model_name": "deepfm",
        "config_file": "/models/models.config",
        "config_labels": {"stable": stable} if stable is not None else {},
        "config_error": None,
        "replicas": [
            {
                "address": "127.0.0.1:8500",
                "reachable": True,
                "error": None,
                "labels": {"stable": stable, "canary": None},
                "versions": [
                    {"version": 2, "state": "AVAILABLE", "error": None},
                    {"version": 1, "state": "AVAILABLE", "error": None},
                ],
            },
            {
                "address": "10.0.0.9:8500",
                "reachable": False,
                "error": "GetModelStatus failed: UNAVAILABLE",
                "labels": {},
                "versions": [],
            },
        ],
    }


def config_for(home: Path) -> PipelineConfig:
    return PipelineConfig(home=home, source="synthetic")
