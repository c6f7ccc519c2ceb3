"""Fixtures for end-to-end runs: an isolated project home (Feast repo, artifacts, model base path, Airflow), its
serving tier (a `serving.server` process on the home's model config, started before the DAG runs), and `make demo`
run on such a home."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from serving.server_process import RunningServer, server_process

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_DS = "1998-01-31"  # the day after the synthetic generator's 30 days of events
SERVING_ADDRESS_FILE = "serving-addresses"  # in a home: the serving tier its Airflow processes verify against
RANKING_MAX_PAIRS = 150 * 25  # 150 movies: the full-catalogue evaluation ranks at most 25 users
SOURCE_FOLDER = "source"  # in a home: a source folder made by the generator command, read as `DEEPFM_SOURCE=parquet`
DEMO_TOP_K = 5  # the length of the list `demo_run` asks for


@contextlib.contextmanager
def serving_tier(home: Path, replicas: int = 1) -> Iterator[list[RunningServer]]:
    """`replicas` `serving.server` processes on the home's model config; their addresses go to the home's
    `SERVING_ADDRESS_FILE`, which `airflow_env` turns into `DEEPFM_SERVING_ADDRESSES`. Yields the servers."""
    from serving.labels import ensure_model_config

    config_file = ensure_model_config(home / "models", "deepfm")
    flags = ["--model-config-file", str(config_file), "--poll-interval-s", "0.5"]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(server_process(home / "models", flags=flags)) for _ in range(replicas)]
        addresses = [server.address for server in servers]
        (home / SERVING_ADDRESS_FILE).write_text(",".join(addresses))
        try:
            yield servers
        finally:
            (home / SERVING_ADDRESS_FILE).unlink(missing_ok=True)


def airflow_env(home: Path) -> dict[str, str]:
    """Environment of an Airflow process that runs the project's DAGs against `home`: on the home's
    `SOURCE_FOLDER` where it has one (`generate_source`), else on the built-in synthetic data."""
    folder = home / SOURCE_FOLDER
    source = {"DEEPFM_SOURCE": "parquet", "DEEPFM_SOURCE_DIR": str(folder)} if folder.is_dir() else {}
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(PROJECT_ROOT / "dags" / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DEEPFM_HOME": str(PROJECT_ROOT),
        "DEEPFM_SOURCE": "synthetic",
        "DEEPFM_FEATURE_REPO": str(home / "feature_repo"),
        "DEEPFM_ARTIFACTS": str(home / "artifacts"),
        "DEEPFM_MODEL_BASE_PATH": str(home / "models"),
        "DEEPFM_EPOCHS": "3",
        "DEEPFM_PICK_PRIOR": "1",  # the synthetic world's picks follow popularity alone: DeepFM starts from the chart
        "DEEPFM_RANKING_MAX_PAIRS": str(RANKING_MAX_PAIRS),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        **source,
        **serving_env(home),
    }


def generate_source(home: Path) -> Path:
    """The home's `SOURCE_FOLDER`, written by the generator command (`python -m deepfm_model.synthetic`) with the
    built-in synthetic set's sizes: 6,000 events of 200 users and 150 movies over the 30 days before
    `SYNTHETIC_DS`."""
    folder = home / SOURCE_FOLDER
    command = [sys.executable, "-m", "deepfm_model.synthetic", "--events", "6000", "--users", "200", "--movies", "150",
               "--start", "1998-01-01", "--days", "30", "--out", str(folder)]  # fmt: skip
    subprocess.run(command, check=True, capture_output=True, timeout=300, cwd=PROJECT_ROOT,
                   env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})  # fmt: skip
    return folder


def serving_env(home: Path) -> dict[str, str]:
    """`DEEPFM_SERVING_ADDRESSES` of the serving tier running for `home`, if one is."""
    path = home / SERVING_ADDRESS_FILE
    return {"DEEPFM_SERVING_ADDRESSES": path.read_text()} if path.exists() else {}


def run_demo(home: Path, top_k: int) -> subprocess.CompletedProcess:
    """`make demo`'s command (`python -m dags.ops.demo`) on `home`: its own serving tier, Airflow's scheduler and
    REST API on the home (SQLite at `home/airflow/airflow.db`), a real DagRun of `SYNTHETIC_DS`, then user 1's
    top `top_k` list."""
    from feature_repo.store import write_config

    write_config(home / "feature_repo")
    env = {key: value for key, value in airflow_env(home).items() if key != "DEEPFM_SERVING_ADDRESSES"}
    command = [sys.executable, "-m", "dags.ops.demo", "--ds", SYNTHETIC_DS, "--user", "1",
               "--top-k", str(top_k), "--airflow-home", str(home / "airflow")]  # fmt: skip
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=1500)


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh home whose source is a folder made by the generator command (the nightly run reads it as a team's
    own tables), through `run_demo` (top 5): the home after its DagRun pushed version 1, and the demo's output."""
    home = tmp_path_factory.mktemp("home")
    generate_source(home)
    return home, run_demo(home, DEMO_TOP_K)
