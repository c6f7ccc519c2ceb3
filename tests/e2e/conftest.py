"""Fixtures for end-to-end runs: an isolated project home (Feast repo, artifacts, model base path, Airflow) and
its serving tier (a `serving.server` process on the home's model config, started before the DAG runs)."""

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


@pytest.fixture(scope="module")
def project_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh home: its own Feast repo config, a source folder made by the generator command (the nightly run
    reads it as a team's own tables), a migrated SQLite Airflow metadata database with the pools, and a serving
    tier running for it."""
    from feature_repo.store import write_config

    home = tmp_path_factory.mktemp("home")
    write_config(home / "feature_repo")
    generate_source(home)
    airflow = Path(sys.executable).parent / "airflow"
    for command in (["db", "migrate"], ["pools", "import", str(PROJECT_ROOT / "dags" / "pools.json")]):
        subprocess.run([str(airflow), *command], env=airflow_env(home), check=True, capture_output=True, timeout=600)
    with serving_tier(home):
        yield home
