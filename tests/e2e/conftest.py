"""Fixtures for end-to-end runs: an isolated project home (Feast repo, artifacts, model base path, Airflow)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SYNTHETIC_DS = "1998-01-31"  # the day after the synthetic generator's 30 days of events


def airflow_env(home: Path) -> dict[str, str]:
    """Environment of an Airflow process that runs the project's DAGs against `home` on synthetic data."""
    return {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(PROJECT_ROOT / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "DEEPFM_HOME": str(PROJECT_ROOT),
        "DEEPFM_SOURCE": "synthetic",
        "DEEPFM_FEATURE_REPO": str(home / "feature_repo"),
        "DEEPFM_ARTIFACTS": str(home / "artifacts"),
        "DEEPFM_MODEL_BASE_PATH": str(home / "models"),
        "DEEPFM_EPOCHS": "3",
        "TF_CPP_MIN_LOG_LEVEL": "2",
    }


@pytest.fixture(scope="module")
def project_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh home: its own Feast repo config and a migrated SQLite Airflow metadata database with the pools."""
    from feature_repo.store import write_config

    home = tmp_path_factory.mktemp("home")
    write_config(home / "feature_repo")
    airflow = Path(sys.executable).parent / "airflow"
    for command in (["db", "migrate"], ["pools", "import", str(PROJECT_ROOT / "dags" / "pools.json")]):
        subprocess.run([str(airflow), *command], env=airflow_env(home), check=True, capture_output=True, timeout=600)
    return home
