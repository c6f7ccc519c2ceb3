"""Nightly DeepFM retraining: features from Feast, a Great Expectations gate, Keras training, TF Serving push."""

from __future__ import annotations

import datetime as dt
import logging

import pendulum
from airflow.sdk import Asset, TaskGroup, dag, task
from airflow.sdk.exceptions import AirflowSkipException

log = logging.getLogger(__name__)


def _config():
    from dags.pipeline.config import PipelineConfig

    return PipelineConfig.from_env()


def log_failure_reason(context) -> None:
    """Failure callback: a record naming the task and its whole reason, easy to find in the task log (`failures`)."""
    from dags.pipeline.failures import failure_line

    ti = context.get("ti") or context.get("task_instance")
    log.error("%s", failure_line(getattr(ti, "task_id", "?"), context.get("ds"), context.get("exception")))


# Tasks that a lost worker, a restarting Redis or Postgres, or a serving replica coming back can fail, and that a
# second try repeats exactly (each rewrites its own files of the run): retried. The data gates (ingest's source
# checks, validate, check_skew) and push (a full disk stays full) fail at once.
TRANSIENT_RETRIES = {"retries": 2, "retry_delay": dt.timedelta(seconds=20), "retry_exponential_backoff": True}
TRAINING_POOL = "training"  # created with one slot from dags/pools.json by every deployment of this project
GPU_QUEUE = "gpu"
# Asset events for other DAGs to schedule on (and for the UI's Assets view): the online store holds the features of
# a new day; a new model version is verified and labelled `stable`.
ONLINE_FEATURES = Asset("deepfm_online_features")
STABLE_MODEL = Asset("deepfm_stable_model")


def gpu_executor_config() -> dict:
    """`executor_config` of the train task: under the KubernetesExecutor, a pod that requests GPUs.

    The pod override names the worker container `base`, so Kubernetes merges it into the executor's pod
    template; `DEEPFM_TRAIN_GPUS` GPUs (default 1) are requested as `nvidia.com/gpu` limits. Other executors
    get no override, and the Kubernetes client is imported only where that executor is configured.
    """
    from airflow.sdk.configuration import conf

    if "KubernetesExecutor" not in conf.get("core", "executor", fallback=""):
        return {}
    from kubernetes.client import models as k8s

    from dags.pipeline.config import PipelineConfig

    gpus = str(PipelineConfig.from_env().train_gpus)
    resources = k8s.V1ResourceRequirements(limits={"nvidia.com/gpu": gpus})
    container = k8s.V1Container(name="base", resources=resources)
    return {"pod_override": k8s.V1Pod(spec=k8s.V1PodSpec(containers=[container]))}


@dag(
    dag_id="deepfm_nightly",
    schedule="@daily",
    start_date=pendulum.datetime(1997, 9, 20, tz="UTC"),  # MovieLens-100K's first day: any date with data is a valid ds
    catchup=False,
    max_active_runs=1,
    tags=["deepfm", "training"],
    default_args={"retries": 0, "on_failure_callback": log_failure_reason},
)
def deepfm_nightly():
    """
    ### Nightly DeepFM retraining

    For the logical date `ds`, trains on every rating event strictly before `ds` 00:00 UTC.

    | group | task | what it does |
    | --- | --- | --- |
    | features | ingest | raw feed validated (Great Expectations), then written as the Feast sources (the fresh features' log folded) |
    | features | update_feature_store | `feast apply`; materialize the day's window and push the fresh features' state into the online store (retried) |
    | features | check_skew | online feature vectors of sampled pairs equal the offline point-in-time values |
    | training | build_training_set | point-in-time features of the `deepfm_v3` FeatureService, split by time 80/10/10 (retried) |
    | training | validate | Great Expectations suite; a failure stops the run here (never retried) |
    | training | train | the Keras DeepFM (pick and like heads), on the `gpu` queue and in the `training` pool (a GPU pod under Kubernetes); metrics, report, SavedModel export (retried: a worker lost mid-training) |
    | training | evaluate | full-catalogue top-N of the model and of `recommend` beside popularity, item-kNN and EASE tuned on the validation window; the retrieval index into the export (retried) |
    | release | bless | candidate vs the serving model on the same test split: AUC floor and tolerance, full-catalogue NDCG@10 not below popularity's nor trailing the serving model's; a NaN loss or a changed serving signature is a rejection |
    | release | push | the next integer version under the model base path; skipped when not blessed |
    | release | verify_serving | the version loads and answers like the in-process model; then it is labelled `stable` (retried) |

    Every task reads and writes `artifacts/runs/<ds>/` (`dags/pipeline/run_dir.py` names each file), so tasks are
    chained by explicit dependencies, not by passing values; re-running a date reuses it and never pushes twice.
    Runs of different dates share the Feast sources, so one runs at a time: `max_active_runs=1` here, and
    `--max-active-runs 1` for `airflow backfill create` (`make backfill`).
    `update_feature_store` updates the Asset `deepfm_online_features` and `verify_serving` the Asset
    `deepfm_stable_model`: schedule other DAGs on them (a cache warmer, an offline scorer) rather than on this DAG.
    Task return values (row counts, validation summary, AUC and logloss, the blessing, the pushed version) are in
    each task's XCom tab; the Data Docs and model report paths are in the task logs.
    """

    with TaskGroup("features", tooltip="Feast sources, registry and online store"):

        @task(doc_md="Write the Feast parquet sources and the labelled events of the run.")
        def ingest(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.ingest(_config(), ds)

        @task(
            doc_md="`feast apply` and materialize the run's window into the online store.",
            outlets=[ONLINE_FEATURES],
            **TRANSIENT_RETRIES,
        )
        def update_feature_store(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.update_feature_store(_config(), ds)

        @task(doc_md="Online feature vectors of sampled pairs must equal the offline point-in-time values.")
        def check_skew(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.check_skew(_config(), ds)

        features_ready = ingest() >> update_feature_store() >> check_skew()

    with TaskGroup("training", tooltip="Point-in-time snapshot, validation gate, DeepFM training"):

        @task(
            doc_md="Point-in-time training set from the `deepfm_v3` FeatureService, split by time.", **TRANSIENT_RETRIES
        )
        def build_training_set(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.build_training_set(_config(), ds)

        @task(doc_md="Great Expectations suite on the snapshot; bad data stops the run before training.")
        def validate(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.validate(_config(), ds)

        # Routed to GPU workers: Celery's `gpu` queue, a GPU pod under Kubernetes; the local executor runs it on
        # the CPU. The `training` pool limits how many trainings run at once, whatever the executor.
        @task(
            doc_md="Train the Keras DeepFM; metrics, HTML report and SavedModel go to the run directory.",
            queue=GPU_QUEUE,
            pool=TRAINING_POOL,
            executor_config=gpu_executor_config(),
            **TRANSIENT_RETRIES,
        )
        def train(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.train(_config(), ds)

        @task(
            doc_md="Full-catalogue top-N of the model and of `recommend` beside tuned rivals; the retrieval index.",
            **TRANSIENT_RETRIES,
        )
        def evaluate(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.evaluate(_config(), ds)

        trained = features_ready >> build_training_set() >> validate() >> train() >> evaluate()

    with TaskGroup("release", tooltip="Blessing, atomic push, serving verification"):

        @task(doc_md="Compare the candidate with the serving model on the same test split.")
        def bless(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.bless(_config(), ds)

        @task(doc_md="Push a blessed model as the next version; a rejected candidate skips this and what follows.")
        def push(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            pushed = stages.push(_config(), ds)
            if pushed["model_version"] is None:
                raise AirflowSkipException(f"Candidate not pushed: {pushed['reason']}")
            return pushed

        @task(
            doc_md="Serve the pushed version and compare probe predictions with the in-process model.",
            outlets=[STABLE_MODEL],
            **TRANSIENT_RETRIES,
        )
        def verify_serving(ds: str | None = None) -> dict:
            from dags.pipeline import stages

            return stages.verify_serving(_config(), ds)

        trained >> bless() >> push() >> verify_serving()


deepfm_nightly()
