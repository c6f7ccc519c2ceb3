"""The nightly DAG end to end through Airflow itself, as `make demo` runs it on a team's own tables: a real DagRun on
SQLite over a parquet folder made by the generator command (`DEEPFM_SOURCE=parquet`), a real push, the list the demo
prints; then the same date run again with `airflow dags test`."""

from __future__ import annotations

import json
import re
import sqlite3
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from dags.ops.task_preload import LOCAL_EXECUTOR_ENV
from dags.pipeline.run_dir import RunDir
from deepfm_model.spec.features import MOVIE_KEY, RATING, USER_KEY
from deepfm_model.synthetic import EVENTS_FILE
from serving.retrieval import INDEX_FILE, RetrievalIndex
from tests.e2e.conftest import DEMO_TOP_K, SOURCE_FOLDER, SYNTHETIC_DS, airflow_env, serving_tier

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

TASKS = {
    "features.ingest", "features.update_feature_store", "features.check_skew",
    "training.build_training_set", "training.validate",
    "training.train", "training.evaluate", "release.bless", "release.push", "release.verify_serving",
}  # fmt: skip


def dags_test(home: Path, ds: str) -> subprocess.CompletedProcess:
    airflow = Path(sys.executable).parent / "airflow"
    return subprocess.run(
        [str(airflow), "dags", "test", "deepfm_nightly", ds],
        env=airflow_env(home), capture_output=True, text=True, timeout=1500,
    )  # fmt: skip


def task_states(home: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        return db.execute("SELECT run_id, task_id, state FROM task_instance ORDER BY run_id, task_id").fetchall()


def asset_events(home: Path) -> list[str]:
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        rows = db.execute("SELECT a.name FROM asset_event e JOIN asset a ON a.id = e.asset_id ORDER BY e.id").fetchall()
    return [name for (name,) in rows]


def test_demo_on_a_parquet_source_prints_the_list(demo_run) -> None:
    _, result = demo_run
    assert result.returncode == 0, result.stderr[-5000:]
    assert f"recommend('1', {DEMO_TOP_K})" in result.stdout, result.stdout
    listed = re.findall(r"^\s*\d+\. (\d\.\d{3})  Synthetic Movie \d+ \(\d{4}\)$", result.stdout, re.MULTILINE)
    assert len(listed) == DEMO_TOP_K, result.stdout  # each with the title and year read from the source's movies table
    assert [float(score) for score in listed] == sorted((float(score) for score in listed), reverse=True)


def test_nightly_run_trains_pushes_and_serves(demo_run) -> None:
    project_home, result = demo_run
    assert result.returncode == 0, result.stderr[-5000:]

    states = task_states(project_home)
    assert {task for _, task, _ in states} == TASKS
    assert all(state == "success" for _, _, state in states), states
    # The tasks were forked from workers that had the stages' libraries already (dags.ops.task_preload).
    scheduler_log = (project_home / "airflow" / "logs" / "components" / "scheduler.log").read_text()
    preload = LOCAL_EXECUTOR_ENV["AIRFLOW__SCHEDULER__MP_FORKSERVER_PRELOAD"].split(",")
    assert f"Set forkserver preload modules for scheduler: {preload}" in scheduler_log

    run_dir = project_home / "artifacts" / "runs" / SYNTHETIC_DS
    keys = [USER_KEY, MOVIE_KEY, RATING]
    labelled = pd.read_parquet(RunDir(project_home / "artifacts", SYNTHETIC_DS).events, columns=keys)
    delivered = pd.read_parquet(project_home / SOURCE_FOLDER / EVENTS_FILE, columns=keys)
    pd.testing.assert_frame_equal(labelled.astype(str).sort_values(keys, ignore_index=True),
                                  delivered.astype(str).sort_values(keys, ignore_index=True))  # fmt: skip
    for name in ("train", "valid", "test"):
        assert (run_dir / "snapshot" / f"{name}.parquet").is_file()
    assert json.loads((run_dir / "validation" / "result.json").read_text())["success"] is True
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["model_version"] == 1
    assert 0.82 < metrics["test_auc"] <= 1.0, metrics["test_auc"]  # this seeded run reaches 0.848 (0.5 is chance)
    assert metrics["test_logloss"] > 0
    assert (project_home / "models" / "deepfm" / "1" / "saved_model.pb").is_file()
    ranking = metrics["full_ranking"]
    assert set(ranking["models"]) == {"recommend", "deepfm", "popularity", "item_knn", "ease"}
    assert ranking["users"] > 0 and ranking["window_start"] < ranking["window_end"]
    # DEEPFM_RANKING_MAX_PAIRS (150 movies x 25 users) reaches the evaluation: a recorded sample of 25 users.
    assert ranking["max_users"] == 25 and ranking["users"] == 25 < ranking["sampled_from"], ranking["sampled_from"]
    for model in ranking["models"].values():
        assert model["ndcg_at_10_ci"][0] <= model["ndcg_at_10"] <= model["ndcg_at_10_ci"][1]
    index = RetrievalIndex.load(project_home / "models" / "deepfm" / "1" / INDEX_FILE)  # pushed with the version
    assert len(index.candidates("no-such-user", [], 10)) == 10
    assert (project_home / "artifacts" / "latest").resolve() == run_dir.resolve()
    verify = json.loads((run_dir / "verify.json").read_text())
    assert verify["verified"] is True and verify["max_abs_diff"] <= 1e-5
    assert asset_events(project_home) == ["deepfm_online_features", "deepfm_stable_model"]


def pushed_versions(home: Path) -> list[str]:
    return sorted(p.name for p in (home / "models" / "deepfm").iterdir() if p.name.isdigit())


def push_task_ends(home: Path) -> list[str]:
    """When each run of the push task ended, as Airflow recorded it."""
    with sqlite3.connect(home / "airflow" / "airflow.db") as db:
        rows = db.execute(
            "SELECT end_date FROM task_instance WHERE task_id = 'release.push' AND state = 'success'"
        ).fetchall()
    return sorted(end for (end,) in rows if end)


def test_rerunning_a_date_pushes_no_second_version(demo_run) -> None:
    project_home, first = demo_run
    assert first.returncode == 0, first.stderr[-5000:]
    run = RunDir(project_home / "artifacts", SYNTHETIC_DS)
    assert pushed_versions(project_home) == ["1"]
    pushed = run.push.read_text()
    assert json.loads(pushed)["model_version"] == 1
    version_1 = (project_home / "models" / "deepfm" / "1" / "saved_model.pb").read_bytes()
    push_ends = push_task_ends(project_home)
    assert push_ends  # the first run's push task succeeded

    with serving_tier(project_home):  # the demo's own tier stopped with it; this one serves the same models
        result = dags_test(project_home, SYNTHETIC_DS)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert push_task_ends(project_home)[-1] > push_ends[-1]  # the push task ran again, and succeeded ...
    assert pushed_versions(project_home) == ["1"]  # ... pushing no second version
    assert run.push.read_text() == pushed  # the run's record of its push is the first run's
    assert (project_home / "models" / "deepfm" / "1" / "saved_model.pb").read_bytes() == version_1  # untouched
    assert json.loads(run.metrics.read_text())["model_version"] == 1
