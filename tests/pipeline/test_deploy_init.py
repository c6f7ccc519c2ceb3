"""The deployment's one-shot set-up (`python -m dags.ops.deploy_init`, what docker/airflow-init.sh runs): the
model config is installed only when absent, so no `up` resets a label; secrets stay readable by their owner only.

The whole set-up (with `airflow db migrate` and the Feast registry database on Postgres) runs in the deploy test.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dags.ops.deploy_init import (
    create_model_base_paths,
    init_deployment,
    install_model_config,
    write_passwords_file,
)
from dags.pipeline.config import ConfigurationError
from serving.labels import ensure_model_config, read_version_config, set_label

SOURCE = Path(__file__).resolve().parents[2] / "serving" / "models.config"


def test_model_config_is_installed_once_and_its_labels_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "models" / "models.config"
    assert install_model_config(SOURCE, target)
    assert target.read_text() == SOURCE.read_text()
    local = ensure_model_config(tmp_path / "local", "deepfm", tmp_path / "local.config")
    target.write_text(local.read_text())  # a config whose base path exists here, as the pipeline keeps it
    (tmp_path / "local" / "deepfm" / "1").mkdir(parents=True)
    set_label(tmp_path / "local", "deepfm", "stable", 1, target)
    before = target.read_text()
    assert not install_model_config(SOURCE, target)
    assert target.read_text() == before
    assert read_version_config(tmp_path / "local", "deepfm", target).labels == {"stable": 1}
    assert not [p.name for p in target.parent.iterdir() if "staging" in p.name]


def test_base_paths_of_the_model_config_are_created(tmp_path: Path) -> None:
    config = ensure_model_config(tmp_path / "models", "deepfm")
    assert create_model_base_paths(config) == [(tmp_path / "models" / "deepfm").resolve()]
    assert (tmp_path / "models" / "deepfm").is_dir()


def test_passwords_file_is_the_owners_only(tmp_path: Path) -> None:
    path = tmp_path / "auth" / "passwords.json"
    write_passwords_file(path, "admin", "s3cret")
    assert path.read_text() == '{"admin": "s3cret"}\n'
    assert path.stat().st_mode & 0o777 == 0o600


def test_a_missing_secret_stops_the_set_up_before_it_writes(tmp_path: Path) -> None:
    env = {"AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(tmp_path / "auth" / "passwords.json")}
    with pytest.raises(ConfigurationError, match="AIRFLOW_ADMIN_PASSWORD"):
        init_deployment(env)
    assert not (tmp_path / "auth").exists()
