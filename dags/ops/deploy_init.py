"""A deployment's one-shot set-up before its services start: what `airflow-init` of `docker/compose.yaml` does.

`docker/airflow-init.sh` (as root) hands the shared volumes to the airflow user, then runs
`python -m dags.ops.deploy_init` as that user; the deploy test (`make deploy-test`) runs this same module with
compose's environment. Idempotent: every `docker compose up` runs it again. In order:

1. the simple auth manager's passwords file (`AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE`, mode 0600) from
   `AIRFLOW_ADMIN_USERNAME` and `AIRFLOW_ADMIN_PASSWORD`, which are never baked into an image;
2. TF Serving's model config: `MODEL_CONFIG_SOURCE` (`serving/models.config`) installed as
   `DEEPFM_MODEL_CONFIG_FILE` only when that is absent. From then on the pipeline owns the file (`serving.labels`
   moves `stable` there, TF Serving polls it), so an `up` never resets a label. Each model's base path is created,
   so TF Serving waits for a first version;
3. the Feast registry's database, when the registry is SQL (`DEEPFM_FEAST_REGISTRY=sql`, `DEEPFM_REGISTRY_URL`);
4. `airflow db migrate`, the connections of `docker/connections.json` and the DAGs' pools (`dags/pools.json`:
   the train task waits forever in a pool that does not exist).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import uuid
from collections.abc import Mapping
from pathlib import Path

from dags.ops.airflow_stack import POOLS_FILE
from dags.pipeline.config import PROJECT_ROOT, ConfigurationError, PipelineConfig

logger = logging.getLogger(__name__)

CONNECTIONS_FILE = PROJECT_ROOT / "docker" / "connections.json"


def write_passwords_file(path: Path, username: str, password: str) -> None:
    """The simple auth manager's passwords file, readable by its owner only (the API server rewrites it)."""
    from deepfm_model.spec.files import staged_path

    with staged_path(path) as staged:
        staged.write_text(json.dumps({username: password}) + "\n")
        staged.chmod(0o600)


def install_model_config(source: Path, target: Path) -> bool:
    """Copy `source` to `target` unless `target` exists (even if another writer gets there first); `True` if it
    was installed. The file appears whole or not at all."""
    from deepfm_model.spec.files import fsync_dir

    if target.exists():
        return False
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = target.with_name(f".{target.name}.{uuid.uuid4().hex}.staging")
    try:
        shutil.copyfile(source, staged)
        staged.chmod(0o644)
        os.link(staged, target)  # unlike a rename, never replaces a file that appeared meanwhile
    except FileExistsError:
        return False
    finally:
        staged.unlink(missing_ok=True)
    fsync_dir(target.parent)
    return True


def create_model_base_paths(config_file: Path) -> list[Path]:
    """Create the `base_path` of every model in a TF Serving model config; return them."""
    from serving.model_config import parse_model_config

    server_config, _ = parse_model_config(config_file.read_text(), source=str(config_file))
    paths = [Path(model.base_path) for model in server_config.model_config_list.config]
    for path in paths:
        path.mkdir(parents=True, exist_ok=True)
    return paths


def init_deployment(env: Mapping[str, str]) -> None:
    """Every step of the module docstring, in order, with the settings in `env`.

    Raises:
        ConfigurationError: a variable the set-up needs is missing; the message names it.
        subprocess.CalledProcessError: an `airflow` command failed (its output is above).
    """

    def required(name: str) -> str:
        if not env.get(name):
            raise ConfigurationError(f"`{name}` must be set for the deployment's set-up")
        return env[name]

    write_passwords_file(
        Path(required("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE")),
        env.get("AIRFLOW_ADMIN_USERNAME") or "admin",
        required("AIRFLOW_ADMIN_PASSWORD"),
    )
    config = PipelineConfig.from_env(env)
    model_config = Path(required("DEEPFM_MODEL_CONFIG_FILE"))
    if install_model_config(Path(required("MODEL_CONFIG_SOURCE")), model_config):
        logger.info("Installed %s from %s", model_config, env["MODEL_CONFIG_SOURCE"])
    else:
        logger.info("Kept %s (the pipeline owns it: its labels stay)", model_config)
    create_model_base_paths(model_config)
    if config.registry and config.registry.get("registry_type") == "sql":
        from feature_repo.store import create_sql_database

        created = create_sql_database(config.registry["path"])
        logger.info("Feast registry database %s", "created" if created else "exists already")
    airflow = str(Path(sys.executable).parent / "airflow")
    for command in (
        ["db", "migrate"],
        ["connections", "import", "--overwrite", str(CONNECTIONS_FILE)],
        ["pools", "import", str(POOLS_FILE)],
    ):
        subprocess.run([airflow, *command], env=dict(env), check=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="deploy_init: %(message)s")
    init_deployment(os.environ)
    logger.info("passwords file written, model config installed, database migrated, connections and pools imported")


if __name__ == "__main__":
    main()
