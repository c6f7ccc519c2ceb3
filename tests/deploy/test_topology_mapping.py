"""The compose topology's mapping, without starting anything: no compose hostname, container path or compose
database is left in what the local processes get, and each service runs compose's own command."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tests import compose as cf
from tests.deploy.topology import ComposeTopology, LocalServices

LOCAL = LocalServices(
    postgres={"host": "127.0.0.1", "port": 5432, "user": "postgres"},
    databases={"airflow": "run_airflow", "feast": "run_feast"},
    redis=("127.0.0.1", 6379),
    redis_databases={1: 7},
    celery_key_prefix="run-prefix:",
)
COMPOSE_HOSTS = re.compile(r"(?<![\w.-])(postgres|redis|airflow-api-server|tf-serving|spark-master):\d+")
CONTAINER_PATHS = ("/opt/airflow", "/opt/deepfm", "/models", "/config", "/home/airflow")


@pytest.fixture
def topology(tmp_path: Path) -> ComposeTopology:
    env = cf.generate_env_file(tmp_path / "docker.env", {"DEEPFM_SOURCE": "synthetic"})
    return ComposeTopology(cf.load_compose(env), tmp_path / "compose", tmp_path / "logs", LOCAL)


def test_env_file_fills_every_secret_and_compose_refuses_a_missing_one(tmp_path: Path) -> None:
    env = cf.generate_env_file(tmp_path / "docker.env")
    assert env.keys() >= {"POSTGRES_PASSWORD", "AIRFLOW_FERNET_KEY", "AIRFLOW_JWT_SECRET", "AIRFLOW_ADMIN_PASSWORD"}
    assert cf.read_env_file(tmp_path / "docker.env") == env and all(env.values())
    assert (tmp_path / "docker.env").stat().st_mode & 0o077 == 0
    with pytest.raises(ValueError, match="AIRFLOW_JWT_SECRET"):
        cf.load_compose({**env, "AIRFLOW_JWT_SECRET": ""})


def test_interpolation_follows_compose() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert cf.interpolate("${SET:-d} ${EMPTY:-d} ${EMPTY-d} ${UNSET-d} $SET $$HOME ${UNSET}", env) == "x d  d x $HOME "
    with pytest.raises(ValueError, match="EMPTY is missing a value: say so"):
        cf.interpolate("${EMPTY:?say so}", env)
    assert cf.interpolate("${EMPTY?fine}", env) == ""


def test_every_service_gets_local_hosts_paths_and_databases(topology: ComposeTopology) -> None:
    for service in topology.services:
        if service in ("postgres", "redis"):
            continue
        env, command = topology.service_env(service), topology.command(service)
        for name, value in env.items():
            assert not COMPOSE_HOSTS.search(value), (service, name, value)
            assert not value.startswith(CONTAINER_PATHS), (service, name, value)
            assert "@127.0.0.1:5432/airflow" not in value and "/feast" not in value, (service, name, value)
        for word in command:
            assert not COMPOSE_HOSTS.search(word) and "=/models" not in word and "=/config" not in word, word
    worker = topology.service_env("airflow-worker-gpu")
    assert worker["AIRFLOW__CELERY__BROKER_URL"] == "redis://127.0.0.1:6379/7"
    assert worker["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].endswith("@127.0.0.1:5432/run_airflow")
    assert worker["DEEPFM_REGISTRY_URL"].endswith("@127.0.0.1:5432/run_feast")
    assert worker["DEEPFM_SERVING_ADDRESSES"] == ",".join(topology.serving_addresses)
    assert worker["DEEPFM_MODEL_BASE_PATH"] == str(topology.root / "volumes" / "deepfm-models")
    assert worker["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == f"{topology.api_url}/execution/"


def test_each_service_runs_composes_command(topology: ComposeTopology) -> None:
    for service in ("airflow-api-server", "airflow-scheduler", "airflow-worker", "airflow-worker-gpu"):
        compose_words = cf.as_list(topology.services[service]["command"])
        assert topology.command(service)[1 : 1 + len(compose_words)] == compose_words, service
    assert topology.command("airflow-init")[1:] == ["-m", "dags.ops.deploy_init"]
    serving = [topology.command("tf-serving", replica) for replica in range(2)]
    flags = [dict(w.removeprefix("--").split("=", 1) for w in command[3:]) for command in serving]
    compose_flags = dict(w.removeprefix("--").split("=", 1) for w in topology.services["tf-serving"]["command"])
    assert all(f.keys() == compose_flags.keys() for f in flags)
    assert [f"127.0.0.1:{f['port']}" for f in flags] == topology.serving_addresses
    assert flags[0]["model_config_file_poll_wait_seconds"] == compose_flags["model_config_file_poll_wait_seconds"]
    installed = Path(topology.service_env("airflow-init")["MODEL_CONFIG_SOURCE"]).read_text()
    assert f'base_path: "{topology.root / "volumes" / "deepfm-models" / "deepfm"}"' in installed
    assert Path(flags[0]["monitoring_config_file"]) == cf.PROJECT_ROOT / "serving" / "monitoring.config"


def test_the_spark_services_run_this_venvs_spark_class_on_their_own_ports(topology: ComposeTopology) -> None:
    spark_class = str(Path(sys.executable).parent / "spark-class")
    master = topology.command("spark-master")
    ports = {port: str(topology.local_port("spark-master", port)) for port in (7077, 8080)}
    assert master == [spark_class, "org.apache.spark.deploy.master.Master", "--host", "127.0.0.1",
                      "--port", ports[7077], "--webui-port", ports[8080]]  # fmt: skip
    assert topology.spark_master_url == f"spark://127.0.0.1:{ports[7077]}"
    workers = [topology.command("spark-worker", replica) for replica in range(topology.replica_count("spark-worker"))]
    assert len(workers) == 2
    for worker in workers:
        assert worker[:3] == [spark_class, "org.apache.spark.deploy.worker.Worker", topology.spark_master_url]
    assert workers[0][4] != workers[1][4], "each worker its own status port"
    assert {topology.process_name("spark-worker", r) for r in range(2)} == {"spark-worker-1", "spark-worker-2"}
    env = topology.service_env("spark-worker")  # the project image's: this venv first, this checkout importable
    assert env["PATH"].split(":")[0] == str(Path(sys.executable).parent) and env["PYTHONPATH"] == str(cf.PROJECT_ROOT)
    # the feature tasks submit to the master
    assert topology.service_env("airflow-worker")["DEEPFM_SPARK_MASTER"] == topology.spark_master_url


def test_deepfm_spark_workers_sets_how_many_spark_workers_start(tmp_path: Path) -> None:
    env = cf.generate_env_file(tmp_path / "docker.env", {"DEEPFM_SOURCE": "synthetic", "DEEPFM_SPARK_WORKERS": "3"})
    topology = ComposeTopology(cf.load_compose(env), tmp_path / "compose", tmp_path / "logs", LOCAL)
    assert topology.replica_count("spark-worker") == 3
    ports = {topology.command("spark-worker", replica)[4] for replica in range(3)}
    assert len(ports) == 3, "each worker its own status port"
