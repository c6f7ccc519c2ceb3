"""Configuration reaches the code: every variable docker/compose.yaml sets changes what the pipeline does.

The Feast settings are checked against the real services (Redis, Postgres): the features land in Redis under
the configured project, the registry lands in Postgres, and a wrong address stops the run before it writes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from dags.pipeline import stages
from dags.pipeline.config import PROJECT_ROOT, ConfigurationError, PipelineConfig, check_reachable
from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.synthetic import generate
from feature_repo import ingest, store
from tests.services import postgres_database, redis_address

COMPOSE = PROJECT_ROOT / "docker" / "compose.yaml"
DS = "1998-01-31"
# A valid value other than compose.yaml's, for the variables where appending "-other" is not one.
OTHER_VALUES = {
    "DEEPFM_SOURCE": "synthetic",
    "DEEPFM_FEAST_ONLINE_STORE": "sqlite",
    "DEEPFM_FEAST_REGISTRY": "file",
    "DEEPFM_FEATURE_ENGINE": "duckdb",
}


def compose_environment() -> dict[str, str]:
    """Every variable an `environment:` block of compose.yaml sets, `${VAR:-default}` read as its default."""
    compose = yaml.safe_load(COMPOSE.read_text())
    env: dict[str, str] = {}
    for service in compose["services"].values():
        block = service.get("environment") or {}
        env.update({name: str(value) for name, value in block.items()})

    def default(match: re.Match) -> str:
        return match.group(2) if match.group(2) is not None else f"<{match.group(1)}>"

    return {name: re.sub(r"\$\{(\w+)(?::-([^}]*))?[^}]*\}", default, value) for name, value in env.items()}


def compose_deepfm_environment() -> dict[str, str]:
    return {k: v for k, v in compose_environment().items() if k.startswith("DEEPFM_")}


def test_every_deepfm_variable_of_compose_changes_the_config() -> None:
    env = compose_deepfm_environment()
    assert {"DEEPFM_FEAST_ONLINE_STORE", "DEEPFM_FEAST_REGISTRY", "DEEPFM_SERVING_ADDRESSES"} <= set(env)
    full = PipelineConfig.from_env(env)
    for name in env:
        other = OTHER_VALUES.get(name, env[name] + "-other")
        assert other != env[name]
        # Another valid value: it must be taken (no error) and give another config.
        changed = PipelineConfig.from_env({**env, name: other})
        assert changed != full, f"{name} is set by compose.yaml but changes nothing ({name}={other!r})"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"DEEPFM_FEAST_ONLINE_STORE": "redis-other"}, "DEEPFM_FEAST_ONLINE_STORE"),
        ({"DEEPFM_FEAST_REGISTRY": "sql-other"}, "DEEPFM_FEAST_REGISTRY"),
        ({"DEEPFM_REGISTRY_URL": None}, "DEEPFM_REGISTRY_URL"),  # the sql registry without its URL
        ({"DEEPFM_REGISTRY_URL": ""}, "DEEPFM_REGISTRY_URL"),
        ({"DEEPFM_SERVING_ADDRESSES": "tf-serving:8500,"}, "DEEPFM_SERVING_ADDRESSES"),
        ({"DEEPFM_SOURCE": "movielens-other"}, "`DEEPFM_SOURCE` must be one of"),
    ],
)
def test_a_refused_value_of_a_compose_variable_raises_naming_the_setting(change: dict, message: str) -> None:
    env = {**compose_deepfm_environment(), **change}
    env = {name: value for name, value in env.items() if value is not None}
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_env(env)


def test_compose_sets_no_variable_only_tests_read() -> None:
    assert "TFSERVING_GRPC_ADDR" not in compose_environment()


def test_compose_deploys_redis_an_sql_registry_and_its_serving_tier() -> None:
    config = PipelineConfig.from_env(compose_deepfm_environment())
    assert config.online_store == {"type": "redis", "connection_string": "redis:6379"}
    assert config.registry["registry_type"] == "sql" and config.registry["path"].startswith("postgresql")
    assert config.serving_addresses == ("tf-serving:8500",)
    assert config.model_config_file == Path("/models/models.config")


def test_defaults_are_the_embedded_deployment() -> None:
    config = PipelineConfig.from_env({})
    assert config.home == PROJECT_ROOT
    assert (config.online_store, config.registry, config.offline_store) == (None, None, None)
    assert config.model_config_file == PROJECT_ROOT / "models" / "models.config"
    assert config.serving_addresses == ("127.0.0.1:8500",)
    assert config.feature_store().config.online_store.type == "sqlite"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEEPFM_FEAST_ONLINE_STORE": "mongo"}, "DEEPFM_FEAST_ONLINE_STORE"),
        ({"DEEPFM_FEAST_REGISTRY": "sql"}, "DEEPFM_REGISTRY_URL"),
        ({"DEEPFM_FEAST_REGISTRY": "etcd"}, "DEEPFM_FEAST_REGISTRY"),
        ({"DEEPFM_FEAST_OFFLINE_STORE": "{not json"}, "DEEPFM_FEAST_OFFLINE_STORE"),
        ({"DEEPFM_SERVING_ADDRESSES": "a:1,,b:2"}, "DEEPFM_SERVING_ADDRESSES"),
        ({"DEEPFM_SOURCE": "kafka"}, "`DEEPFM_SOURCE` must be one of"),
        ({"DEEPFM_NEGATIVES": "eight"}, "`DEEPFM_NEGATIVES` must be a number"),
        ({"DEEPFM_NEGATIVES": "-1"}, "negatives_per_event` must not be negative.*from `DEEPFM_NEGATIVES`"),
        ({"DEEPFM_RANKING_MAX_PAIRS": "0"}, "from `DEEPFM_RANKING_MAX_PAIRS`"),
        ({"DEEPFM_AUC_FLOOR": "high"}, "`DEEPFM_AUC_FLOOR` must be a number"),
        ({"DEEPFM_TRAIN_GPUS": "0"}, "`train_gpus` must be positive.*from `DEEPFM_TRAIN_GPUS`"),
        ({"DEEPFM_TRAIN_GPUS": "two"}, "`DEEPFM_TRAIN_GPUS` must be a number"),
        ({"DEEPFM_FEATURE_ENGINE": "flink"}, "`DEEPFM_FEATURE_ENGINE` must be one of"),
        ({"DEEPFM_SPARK_MASTER": " "}, "`DEEPFM_SPARK_MASTER` must name a Spark master"),
        ({"DEEPFM_SPARK_CONF": "{not json"}, "`DEEPFM_SPARK_CONF` is not valid JSON"),
        ({"DEEPFM_SPARK_CONF": '["spark.executor.memory"]'}, "`DEEPFM_SPARK_CONF` must be a JSON object"),
        ({"DEEPFM_SPARK_CONF": '{"executor.memory": "4g"}'}, "`DEEPFM_SPARK_CONF` keys must start with `spark.`"),
        ({"DEEPFM_SPARK_CONF": '{"spark.jars": null}'}, "`DEEPFM_SPARK_CONF` values must be strings"),
        ({"DEEPFM_PICK_PRIOR": "maybe"}, "`DEEPFM_PICK_PRIOR` must be 1/true/yes or 0/false/no"),
        ({"DEEPFM_ALLOW_SIGNATURE_CHANGE": "sure"}, "`DEEPFM_ALLOW_SIGNATURE_CHANGE` must be 1/true/yes"),
    ],
)
def test_a_bad_setting_is_refused_by_name(env: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        PipelineConfig.from_env(env)


def test_offline_store_and_addresses_reach_feast_and_serving(tmp_path: Path) -> None:
    store.write_config(tmp_path / "repo")
    env = {"DEEPFM_FEATURE_REPO": str(tmp_path / "repo"), "DEEPFM_SERVING_ADDRESSES": "10.0.0.1:8500, 10.0.0.2:8500"}
    assert PipelineConfig.from_env(env).feature_store().config.offline_store.type == "duckdb"
    assert (
        PipelineConfig.from_env({**env, "DEEPFM_FEAST_OFFLINE_STORE": "file"}).feature_store().config.offline_store.type
        == "file"
    )
    block = json.dumps({"type": "file"})
    assert PipelineConfig.from_env({**env, "DEEPFM_FEAST_OFFLINE_STORE": block}).offline_store == {"type": "file"}
    assert PipelineConfig.from_env(env).serving_addresses == ("10.0.0.1:8500", "10.0.0.2:8500")
    moved = PipelineConfig.from_env({**env, "DEEPFM_MODEL_BASE_PATH": str(tmp_path / "m")})
    assert moved.model_config_file == tmp_path / "m" / "models.config"
    assert moved.version_dir(3) == tmp_path / "m" / "deepfm" / "3"


def test_redis_online_store_and_sql_registry_are_used_for_real(tmp_path: Path) -> None:
    """Sources applied and materialized through the config: keys in Redis under the project, objects in Postgres."""
    import redis
    import sqlalchemy

    host, port = redis_address()
    project = f"deepfm_cfg_{tmp_path.name[-8:].replace('-', '_')}"
    store.write_config(tmp_path / "repo")
    with postgres_database("deepfm_registry_test", driver="postgresql+psycopg") as url:
        env = {
            "DEEPFM_FEATURE_REPO": str(tmp_path / "repo"),
            "DEEPFM_FEAST_PROJECT": project,
            "DEEPFM_FEAST_ONLINE_STORE": "redis",
            "DEEPFM_REDIS_ADDR": f"{host}:{port}",
            "DEEPFM_FEAST_REGISTRY": "sql",
            "DEEPFM_REGISTRY_URL": url,
        }
        config = PipelineConfig.from_env(env)
        check_reachable(config)
        raw = generate(seed=0)
        ingest.write_sources(raw, DS, store.data_dir(config.feature_repo))
        feature_store = config.feature_store()
        try:
            store.apply(feature_store)
            store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
            keys = list(redis.Redis(host=host, port=port).scan_iter(f"*{project}"))
            assert len(keys) >= raw.users["user_id"].nunique()
            online = store.online_features(
                feature_store, raw.users["user_id"].iloc[0], list(raw.movies["movie_id"][:3])
            )
            assert online["user_rating_count"].notna().all()
            with sqlalchemy.create_engine(url).connect() as db:
                views = db.execute(sqlalchemy.text("SELECT feature_view_name FROM feature_views WHERE project_id = :p"),
                                   {"p": project}).scalars().all()  # fmt: skip
            assert "user_stats" in views
            assert not (store.data_dir(config.feature_repo) / "registry.db").exists()
        finally:
            feature_store.teardown()
    assert not list(redis.Redis(host=host, port=port).scan_iter(f"*{project}"))


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"DEEPFM_FEAST_ONLINE_STORE": "redis", "DEEPFM_REDIS_ADDR": "127.0.0.1:1"}, "DEEPFM_REDIS_ADDR=127.0.0.1:1"),
        ({"DEEPFM_FEAST_REGISTRY": "sql", "DEEPFM_REGISTRY_URL": "postgresql+psycopg://u:secret@127.0.0.1:1/x"},
         "DEEPFM_REGISTRY_URL=postgresql+psycopg://u:***@127.0.0.1:1/x"),
        ({"DEEPFM_FEATURE_ENGINE": "spark", "DEEPFM_SPARK_MASTER": "spark://127.0.0.1:1,127.0.0.1:2"},
         "DEEPFM_SPARK_MASTER=spark://127.0.0.1:1,127.0.0.1:2"),
    ],
)  # fmt: skip
def test_an_unreachable_service_stops_ingest_before_it_writes(tmp_path: Path, env: dict, named: str) -> None:
    store.write_config(tmp_path / "repo")
    env = {**env, "DEEPFM_SOURCE": "synthetic", "DEEPFM_FEATURE_REPO": str(tmp_path / "repo"),
           "DEEPFM_ARTIFACTS": str(tmp_path / "artifacts")}  # fmt: skip
    config = PipelineConfig.from_env(env)
    with pytest.raises(ConfigurationError, match=re.escape(named)) as failure:
        stages.ingest(config, DS)
    assert "secret" not in str(failure.value)
    assert not (tmp_path / "artifacts").exists()
    assert not store.data_dir(config.feature_repo).exists()


def test_feature_engine_and_spark_settings_come_from_the_environment() -> None:
    default = PipelineConfig.from_env({})
    assert (default.feature_engine, default.spark_master, default.spark_conf) == ("duckdb", "local[2]", {})
    conf = {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": 64, "spark.eventLog.enabled": True}
    config = PipelineConfig.from_env({"DEEPFM_FEATURE_ENGINE": "spark", "DEEPFM_SPARK_MASTER": "spark://spark:7077",
                                      "DEEPFM_SPARK_CONF": json.dumps(conf)})  # fmt: skip
    assert (config.feature_engine, config.spark_master) == ("spark", "spark://spark:7077")
    assert config.spark_conf == {"spark.executor.memory": "4g", "spark.sql.shuffle.partitions": "64",
                                 "spark.eventLog.enabled": "true"}  # fmt: skip
    with pytest.raises(ValueError, match="`feature_engine` must be one of"):
        PipelineConfig(home=PROJECT_ROOT, feature_engine="pandas")


def test_blessing_gates_come_from_the_environment() -> None:
    config = PipelineConfig.from_env(
        {"DEEPFM_AUC_FLOOR": "0.7", "DEEPFM_AUC_TOLERANCE": "0.05", "DEEPFM_POPULARITY_TOLERANCE": "0.2"}
    )
    assert (config.auc_floor, config.auc_tolerance, config.popularity_tolerance) == (0.7, 0.05, 0.2)
    defaults = PipelineConfig.from_env({})
    assert (defaults.auc_tolerance, defaults.popularity_tolerance) == (PipelineConfig.auc_tolerance, 0.0)
