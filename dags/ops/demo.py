"""`make demo`: one real nightly DagRun through Airflow's scheduler, then one user's top 10 movies over gRPC.

1. The serving tier starts first: a `serving.server` process on the model config file the pipeline keeps (its own
   free port on 127.0.0.1), as TF Serving runs beside Airflow in `docker/`.
2. Airflow's components start on the project's home (LocalExecutor, SQLite), the run of logical date `ds` is
   triggered through the REST API and run by the scheduler, so the UI shows its task logs and true durations
   (`make airflow` later shows the same run). `verify_serving` checks the pushed version on the serving tier
   above (`DEEPFM_SERVING_ADDRESSES`) and moves `stable` there.
3. The run's full-catalogue top-N table is printed (DeepFM, `recommend` and the tuned rivals), then
   `recommend(user, 10)` through `stable` on that same server (`serving.recommend.Recommender`: the retrieval index
   pushed with the version, then `serving.ranking.Ranker` over `feature_repo.online_reader.OnlineFeatureReader`
   and gRPC Predict), the top 10 printed with their scores.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import os
from pathlib import Path

import pandas as pd

from dags.pipeline.config import PipelineConfig
from dags.pipeline.release import STABLE_LABEL, serving_version
from dags.pipeline.serving_tier import wait_available
from deepfm_model.spec.dates import check_ds
from deepfm_model.spec.files import read_json

logger = logging.getLogger(__name__)

DAG_ID = "deepfm_nightly"
RUN_TIMEOUT_S = 30 * 60


def run_nightly(ds: str, serving_addresses: list[str], airflow_home: Path, timeout_s: float = RUN_TIMEOUT_S) -> dict:
    """Trigger the nightly run of `ds` on a LocalExecutor stack of `airflow_home` and wait for it; return the run.

    Raises:
        RuntimeError: the run did not succeed; the message names the tasks that did not and the log folder.
    """
    from dags.ops.airflow_stack import AirflowStack, StackConfig

    env = {**os.environ, "DEEPFM_SERVING_ADDRESSES": ",".join(serving_addresses)}
    config = StackConfig(airflow_home=airflow_home, log_dir=airflow_home / "logs" / "components")
    with AirflowStack(config, env) as stack:
        stack.start(dag_ids=(DAG_ID,))
        stack.unpause(DAG_ID)
        run = _start_run(stack, ds)
        logger.info("Running %s; follow it at %s/dags/%s", run["dag_run_id"], stack.url, DAG_ID)
        try:
            finished = stack.wait_for_run(DAG_ID, run["dag_run_id"], timeout=timeout_s)
            if finished["state"] != "success":
                raise RuntimeError(_why_failed(stack, finished, config.log_dir))
        finally:
            stack.request("PATCH", f"/api/v2/dags/{DAG_ID}", json={"is_paused": True}, check=False)
    return finished


def _why_failed(stack, run: dict, log_dir: Path) -> str:
    """The run's unfinished tasks, and each failed task's whole reason as its log's failure line has it."""
    from dags.pipeline.failures import failure_reason

    instances = stack.task_instances(DAG_ID, run["dag_run_id"])
    states = {ti["task_id"]: ti["state"] for ti in instances if ti["state"] not in ("success", "skipped")}
    lines = [f"Run {run['dag_run_id']} {run['state']}: {states}"]
    for ti in instances:
        if ti["state"] == "failed":
            events = stack.task_log(DAG_ID, run["dag_run_id"], ti["task_id"], ti["try_number"])
            lines.append(failure_reason(events, ti["task_id"]) or f"{ti['task_id']}: no failure line in its log")
    return "\n".join([*lines, f"Task logs in {stack.url}/dags/{DAG_ID} and components' logs in {log_dir}"])


def _start_run(stack, ds: str) -> dict:
    """Trigger the run of `ds`; if one exists (a logical date has one run), clear it so the scheduler runs it again."""
    logical_date = f"{ds}T00:00:00Z"
    runs = stack.request("GET", f"/api/v2/dags/{DAG_ID}/dagRuns",
                         params={"logical_date_gte": logical_date, "logical_date_lte": logical_date}).json()  # fmt: skip
    if not runs["dag_runs"]:
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        return stack.trigger(DAG_ID, logical_date, run_id=f"demo__{ds}__{stamp}")
    run = runs["dag_runs"][0]
    body = {"dag_run_id": run["dag_run_id"], "dry_run": False, "only_failed": False, "reset_dag_runs": True}
    stack.request("POST", f"/api/v2/dags/{DAG_ID}/clearTaskInstances", json=body)
    return run


def recommend(config: PipelineConfig, ds: str, user_id: str, address: str, top_k: int) -> list[tuple[str, float]]:
    """Print the run's full-catalogue table, then `recommend(user_id, top_k)` through `stable` at `address`:
    retrieval with the index pushed with the version, then DeepFM over gRPC."""
    from feature_repo.online_reader import OnlineFeatureReader
    from feature_repo.raw_source import read_movies
    from serving.client import ServingClient
    from serving.ranking import Ranker
    from serving.recommend import Recommender
    from serving.retrieval import INDEX_FILE, RetrievalIndex

    movies = read_movies(config.load_raw()).set_index("movie_id")
    with ServingClient(address, model_name=config.model_name, version_label=STABLE_LABEL) as client:
        version = wait_available(client, serving_version(config), deadline_s=180)
        index = RetrievalIndex.load(config.version_dir(version) / INDEX_FILE)
        recommender = Recommender(Ranker(client, OnlineFeatureReader(config.feature_store())), index)
        ranked = recommender.recommend(user_id, top_k)
    metrics = read_json(config.run_dir(ds).metrics)
    print(
        f"\nRun {ds}: test AUC {metrics['test_auc']:.4f} ({metrics.get('auc_signal', 'probability')} among rated "
        f"events), logloss {metrics['test_logloss']:.4f} ({config.run_dir(ds).metrics})"
    )
    print(full_ranking_table(metrics.get("full_ranking")))
    print(f"recommend({user_id!r}, {top_k}) (model {config.model_name!r} version {version}, gRPC {address}):")
    for rank, (movie_id, score) in enumerate(ranked, start=1):
        year = movies.release_year.get(movie_id)
        print(
            f"{rank:>3}. {score:.3f}  {movies.title.get(movie_id, movie_id)}{'' if pd.isna(year) else f' ({int(year)})'}"
        )
    return ranked


def full_ranking_table(full_ranking: dict | None) -> str:
    """The run's full-catalogue top-N metrics as a text table (one row per model, 95% intervals)."""
    if not full_ranking:
        return "(no full-catalogue evaluation in this run)"
    lines = [
        f"Full-catalogue top-N over {full_ranking['users']} users (window from {full_ranking['window_start']}):",
        f"{'model':<12} {'NDCG@10':>22} {'Recall@10':>10} {'Recall@50':>10} {'MRR':>7}",
    ]
    for name, model in full_ranking["models"].items():
        low, high = model.get("ndcg_at_10_ci") or (float("nan"), float("nan"))
        lines.append(f"{name:<12} {model['ndcg_at_10']:>8.4f} [{low:.3f}, {high:.3f}] {model['recall_at_10']:>10.4f} "
                     f"{model['recall_at_50']:>10.4f} {model['mrr']:>7.4f}")  # fmt: skip
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    from serving.labels import ensure_model_config
    from serving.server_process import server_process

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ds", required=True, type=check_ds, help="logical date of the nightly run")
    parser.add_argument("--user", default="1", help="user id to recommend for")
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--airflow-home", type=Path, default=Path(os.environ.get("AIRFLOW_HOME", "airflow_home")))
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Feast's registry refreshes and httpx's line per request (the run is polled every 2 s) would fill the output;
    # the run's progress is the client's line per task state.
    for noisy in ("feast", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = PipelineConfig.from_env()
    config_file = ensure_model_config(config.model_base_path, config.model_name, config.model_config_file)
    with server_process(
        config.model_base_path, config.model_name, flags=["--model-config-file", str(config_file)]
    ) as server:
        logger.info("Serving tier: serving.server at %s, polling %s", server.address, config_file)
        run_nightly(args.ds, [server.address], args.airflow_home.resolve())
        recommend(config, args.ds, args.user, server.address, args.top_k)


if __name__ == "__main__":
    main()
