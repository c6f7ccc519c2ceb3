"""Nightly DeepFM retraining: features from Feast, a Great Expectations gate, Keras training, TF Serving push."""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import dag, task

PROJECT_HOME = Path(os.environ.get("DEEPFM_HOME", Path(__file__).resolve().parents[1]))


def _config():
    from deepfm_model.pipeline import PipelineConfig

    return PipelineConfig.from_env(PROJECT_HOME)


@dag(
    dag_id="deepfm_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(1998, 4, 20, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["deepfm", "training"],
    default_args={"retries": 0},
)
def deepfm_nightly():
    """
    ### Nightly DeepFM retraining

    For the logical date `ds`, trains on every rating event strictly before `ds` 00:00 UTC:

    1. **ingest** rating events and profiles into the Feast sources (`feature_repo/data/`);
    2. **update_feature_store**: `feast apply`, materialize the new window into the online store;
    3. **build_training_set**: point-in-time correct features from the `deepfm_v1` FeatureService,
       split by time into train / valid / test (80 / 10 / 10);
    4. **validate** the snapshot with Great Expectations; a failure stops the run here;
    5. **train** the Keras DeepFM; metrics, report and SavedModel go to the run directory;
    6. **bless**: the candidate must clear the AUC floor and not lose to the serving model;
    7. **push** the SavedModel as the next integer version under the model base path;
    8. **verify_serving**: a TF Serving-compatible server loads the version and answers probe requests
       equal to the in-process predictions.

    Every task reads and writes `artifacts/runs/<ds>/`; re-running a date reuses it.
    """

    @task
    def ingest(ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.ingest(_config(), ds)

    @task
    def update_feature_store(_ingested: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.update_feature_store(_config(), ds)

    @task
    def build_training_set(_store: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.build_training_set(_config(), ds)

    @task
    def validate(_snapshot: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.validate(_config(), ds)

    # Training is routed to GPU workers: the Celery `gpu` queue; the `training` pool bounds concurrent runs.
    @task(queue="gpu")
    def train(_validation: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.train(_config(), ds)

    @task
    def bless(_metrics: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.bless(_config(), ds)

    @task
    def push(_blessing: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.push(_config(), ds)

    @task
    def verify_serving(_pushed: dict, ds: str | None = None) -> dict:
        from deepfm_model import pipeline

        return pipeline.verify_serving(_config(), ds)

    verify_serving(push(bless(train(validate(build_training_set(update_feature_store(ingest())))))))


deepfm_nightly()
