"""Where a nightly run reads and writes, the deployment it talks to, and the gates it applies.

`PipelineConfig.from_env` is the one place that maps the environment to the deployment (the README's table
lists every variable): the Feast online store, registry and offline store, the model base path and model
config file, and the serving addresses that verification and the demo's ranking use. Every `DEEPFM_*` variable
that `docker/compose.yaml` sets is read here.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepfm_model.config import ModelConfig, TrainConfig

if TYPE_CHECKING:
    from dags.pipeline.run_dir import RunDir

PROJECT_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("movielens", "synthetic", "parquet")
ONLINE_STORES = ("sqlite", "redis")
REGISTRIES = ("file", "sql")
FEATURE_ENGINES = ("duckdb", "spark")
DEFAULT_SPARK_MASTER = "local[2]"
SPARK_STANDALONE = "spark://"  # a standalone cluster's master URL: spark://host:port[,host:port]
DEFAULT_SERVING_ADDRESS = "127.0.0.1:8500"  # `make serve`, and the demo's serving tier
DEFAULT_REDIS_ADDRESS = "127.0.0.1:6379"


class ConfigurationError(ValueError):
    """A setting is invalid or names a service that cannot be reached; the message names the variable."""


@dataclass(frozen=True)
class PipelineConfig:
    """Where a run reads and writes, and the gates it applies.

    Attributes:
        home: project root.
        source: `"movielens"` (MovieLens-100K, fetched at set-up), `"synthetic"` (small generated data) or
            `"parquet"` (a folder of events, users and movies tables: `feature_repo.raw_source`).
        source_dir: the folder of the `"parquet"` source (`DEEPFM_SOURCE_DIR`).
        feature_repo: the Feast repository folder.
        data_cache: folder of the verified MovieLens download.
        artifacts: folder holding `runs/<ds>/` and the `latest` link.
        model_base_path: TF Serving model base path; versions go to `<base>/<model_name>/<n>/`.
        model_name: served model name.
        auc_floor: a candidate below this test AUC is never pushed.
        auc_tolerance: a candidate may trail the serving model's AUC by at most this much.
        epochs: maximum training epochs (early stopping usually ends sooner).
        batch_size: training batch size (large data trains faster with larger batches).
        early_stopping_patience: epochs without a better validation AUC before training stops.
        allow_signature_change: bless a candidate whose `serving_default` signature differs from the serving
            model's (a deliberate spec change); its AUC is then not compared with the serving model's.
        pick_prior: train the pick head on the popularity prior (`ModelConfig.pick_prior`, `DEEPFM_PICK_PRIOR`):
            off by default; for small data whose picks follow popularity, where DeepFM cannot learn the chart
            from a few thousand events.
        feast_project: Feast project (and so the key prefix in Redis); `None` keeps `feature_store.yaml`'s.
        online_store: Feast `online_store` block; `None` keeps `feature_store.yaml`'s (SQLite).
        registry: Feast `registry` block; `None` keeps `feature_store.yaml`'s (a file).
        offline_store: Feast `offline_store` block; `None` keeps `feature_store.yaml`'s (DuckDB).
        model_config_file: TF Serving's model config file, which the serving tier polls and the pipeline's label
            moves edit; `<model_base_path>/models.config` when `None`.
        serving_addresses: the TF Serving gRPC endpoints (replicas) a pushed version is verified on.
        negatives_per_event: movies sampled per rated event as "not picked" rows (`feature_repo.negatives`);
            0 trains on rated events only.
        sampling_seed: seed of that sampling (recorded in the run).
        max_sampled_rows: at most this many sampled rows a night (beyond it, each event gets the floor or the
            ceiling of `max_sampled_rows / events` draws, the rate recorded); the sampled rows are entity rows of the training set and training rows, so at 10M
            events 8 per event would set the night's length. `None`: no cap.
        ndcg_tolerance: a candidate may trail the serving model's full-catalogue NDCG@10 by at most this much.
        popularity_tolerance: a candidate's full-catalogue NDCG@10 (`recommend`) may trail the popularity rival's
            in the same run by at most this much (beyond the noise); 0 by default.
        ranking_max_users: the full-catalogue evaluation ranks for at most this many users of the test window
            (a seeded sample, recorded); `None`: every user.
        ranking_max_pairs: and at most this many (user, candidate movie) pairs: on a catalogue of n movies, at
            most `ranking_max_pairs // n` users (every user ranks the whole catalogue; its features and scores are
            held for each pair).
        train_gpus: GPUs the `train` task's pod requests under the KubernetesExecutor.
        feature_engine: what computes the nightly features over the event history: `"duckdb"` (embedded, in the
            task's process) or `"spark"` (`feature_repo.spark_engine`: the raw checks, the daily aggregates and
            the fresh-features fold, with the same definitions and outputs; and, unless `offline_store` names
            another, Feast's training set and materialization through its Spark offline store and engine).
        spark_master: the Spark master of the `"spark"` engine: `local[2]`, or `spark://host:7077` for a cluster.
        spark_conf: further Spark settings (`spark.*` keys) passed through to the session as they are.
        settings: the variable each setting came from, for error messages (`from_env` fills it).
    """

    home: Path
    source: str = "movielens"
    source_dir: Path | None = None
    feature_repo: Path | None = None
    data_cache: Path | None = None
    artifacts: Path | None = None
    model_base_path: Path | None = None
    model_name: str = "deepfm"
    auc_floor: float = 0.6
    auc_tolerance: float = 0.01
    epochs: int = TrainConfig.epochs
    batch_size: int = TrainConfig.batch_size
    early_stopping_patience: int = TrainConfig.early_stopping_patience
    allow_signature_change: bool = False
    pick_prior: bool = ModelConfig.pick_prior
    feast_project: str | None = None
    online_store: dict | None = None
    registry: dict | None = None
    offline_store: dict | None = None
    model_config_file: Path | None = None
    serving_addresses: tuple[str, ...] = (DEFAULT_SERVING_ADDRESS,)
    negatives_per_event: int = 8
    sampling_seed: int = 0
    max_sampled_rows: int | None = 4_000_000
    ndcg_tolerance: float = 0.01
    popularity_tolerance: float = 0.0
    ranking_max_users: int | None = 2000
    ranking_max_pairs: int = 1_000_000
    train_gpus: int = 1
    feature_engine: str = "duckdb"
    spark_master: str = DEFAULT_SPARK_MASTER
    spark_conf: dict[str, str] = field(default_factory=dict)
    settings: dict[str, str] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise ValueError(f"`source` must be one of {SOURCES}. Received: `source={self.source!r}`")
        if self.feature_engine not in FEATURE_ENGINES:
            raise ValueError(
                f"`feature_engine` must be one of {FEATURE_ENGINES}. Received: `feature_engine={self.feature_engine!r}`"
            )
        if not self.spark_master.strip():
            raise ValueError(f"`spark_master` must name a Spark master. Received: `spark_master={self.spark_master!r}`")
        defaults = {
            "feature_repo": self.home / "feature_repo",
            "data_cache": self.home / "data" / "movielens",
            "artifacts": self.home / "artifacts",
            "model_base_path": self.home / "models",
        }
        for name, default in defaults.items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, default)
        if self.model_config_file is None:
            object.__setattr__(self, "model_config_file", Path(self.model_base_path) / "models.config")
        if self.negatives_per_event < 0:
            raise ValueError(
                f"`negatives_per_event` must not be negative. Received: `negatives_per_event={self.negatives_per_event}`"
            )
        if self.ranking_max_users is not None and self.ranking_max_users < 1:
            raise ValueError(
                f"`ranking_max_users` must be positive. Received: `ranking_max_users={self.ranking_max_users}`"
            )
        if self.max_sampled_rows is not None and self.max_sampled_rows < 0:
            raise ValueError(
                f"`max_sampled_rows` must not be negative. Received: `max_sampled_rows={self.max_sampled_rows}`"
            )
        if self.ranking_max_pairs < 1:
            raise ValueError(
                f"`ranking_max_pairs` must be positive. Received: `ranking_max_pairs={self.ranking_max_pairs}`"
            )
        if self.train_gpus < 1:
            raise ValueError(f"`train_gpus` must be positive. Received: `train_gpus={self.train_gpus}`")
        if not self.serving_addresses:
            raise ValueError("`serving_addresses` must name at least one TF Serving endpoint. Received: `()`")

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> PipelineConfig:
        """Config from `DEEPFM_*` environment variables (`os.environ` by default), for the DAG and command lines.

        Raises:
            ConfigurationError: a variable has a value it cannot take; the message names it.
        """
        env = os.environ if env is None else env
        home = Path(env.get("DEEPFM_HOME", PROJECT_ROOT))

        def path(name: str) -> Path | None:
            return Path(env[name]) if name in env else None

        def choice(name: str, allowed: tuple[str, ...]) -> str:
            value = env.get(name, allowed[0])
            if value not in allowed:
                raise ConfigurationError(f"`{name}` must be one of {allowed}. Received: `{name}={value!r}`")
            return value

        settings: dict[str, str] = {}
        online_store = None
        if choice("DEEPFM_FEAST_ONLINE_STORE", ONLINE_STORES) == "redis":
            online_store = {"type": "redis", "connection_string": env.get("DEEPFM_REDIS_ADDR", DEFAULT_REDIS_ADDRESS)}
            settings["online_store"] = "DEEPFM_REDIS_ADDR"
        registry = None
        if choice("DEEPFM_FEAST_REGISTRY", REGISTRIES) == "sql":
            if not env.get("DEEPFM_REGISTRY_URL"):
                raise ConfigurationError("`DEEPFM_FEAST_REGISTRY=sql` needs `DEEPFM_REGISTRY_URL` (a SQLAlchemy URL)")
            # A short cache: tasks on other workers see a new `feast apply` within a minute.
            registry = {"registry_type": "sql", "path": env["DEEPFM_REGISTRY_URL"], "cache_ttl_seconds": 60}
            settings["registry"] = "DEEPFM_REGISTRY_URL"
        offline_store = None
        if env.get("DEEPFM_FEAST_OFFLINE_STORE"):
            offline_store = _offline_store(env["DEEPFM_FEAST_OFFLINE_STORE"])
        addresses = tuple(a.strip() for a in env.get("DEEPFM_SERVING_ADDRESSES", DEFAULT_SERVING_ADDRESS).split(","))
        if not all(addresses):
            raise ConfigurationError(
                f"`DEEPFM_SERVING_ADDRESSES` has an empty entry: {env['DEEPFM_SERVING_ADDRESSES']!r}"
            )
        numbers = _numbers(env)
        spark_master = env.get("DEEPFM_SPARK_MASTER", DEFAULT_SPARK_MASTER)
        settings["spark_master"] = "DEEPFM_SPARK_MASTER"
        if not spark_master.strip():
            raise ConfigurationError(f"`DEEPFM_SPARK_MASTER` must name a Spark master. Received: {spark_master!r}")
        try:
            return cls(
                home=home,
                source=choice("DEEPFM_SOURCE", SOURCES),
                source_dir=path("DEEPFM_SOURCE_DIR"),
                feature_repo=path("DEEPFM_FEATURE_REPO"),
                data_cache=path("DEEPFM_DATA_CACHE"),
                artifacts=path("DEEPFM_ARTIFACTS"),
                model_base_path=path("DEEPFM_MODEL_BASE_PATH"),
                allow_signature_change=_flag(env, "DEEPFM_ALLOW_SIGNATURE_CHANGE"),
                pick_prior=_flag(env, "DEEPFM_PICK_PRIOR"),
                feast_project=env.get("DEEPFM_FEAST_PROJECT") or None,
                online_store=online_store,
                registry=registry,
                offline_store=offline_store,
                model_config_file=path("DEEPFM_MODEL_CONFIG_FILE"),
                serving_addresses=addresses,
                feature_engine=choice("DEEPFM_FEATURE_ENGINE", FEATURE_ENGINES),
                spark_master=spark_master,
                spark_conf=_spark_conf(env.get("DEEPFM_SPARK_CONF", "")),
                settings=settings,
                **numbers,
            )
        except ValueError as error:  # a number the config refuses: name the variable it came from
            named = [f"`{variable}`" for variable, (name, _) in NUMBER_VARIABLES.items() if f"`{name}" in str(error)]
            raise ConfigurationError(f"{error} (from {', '.join(named) or 'the environment'})") from error

    def ranking_users(self, catalogue_size: int) -> int:
        """How many test-window users the full-catalogue evaluation ranks at most, on a catalogue of this size."""
        by_pairs = max(1, self.ranking_max_pairs // max(catalogue_size, 1))
        return by_pairs if self.ranking_max_users is None else min(self.ranking_max_users, by_pairs)

    def run_dir(self, ds: str) -> RunDir:
        """The run directory of logical date `ds` (YYYY-MM-DD)."""
        from dags.pipeline.run_dir import RunDir  # imported here: the DAG file reads this module while it parses

        return RunDir(self.artifacts, ds)

    def version_dir(self, version: int) -> Path:
        """Where pushed `version` of the served model lives under the model base path."""
        return Path(self.model_base_path) / self.model_name / str(version)

    def feature_store(self):
        """The Feast `FeatureStore` of this deployment: the repo's `feature_store.yaml` with the settings above.

        With the `spark` feature engine and no offline store named, Feast's offline work runs on the same Spark
        master: the training set through its Spark offline store, materialization through its Spark engine.
        """
        from feature_repo.store import open_store

        blocks = {"offline_store": self.offline_store}
        if self.feature_engine == "spark" and self.offline_store is None:
            from feature_repo.spark_engine import feast_blocks

            blocks = feast_blocks(self.spark_master, self.spark_conf)
        return open_store(
            self.feature_repo, project=self.feast_project, online_store=self.online_store, registry=self.registry,
            **blocks,
        )  # fmt: skip

    def load_raw(self):
        """The raw tables of the configured source: `RawData` in memory, or a `RawSource` over a folder's files.

        Raises:
            ConfigurationError: `source="parquet"` without a `source_dir`.
        """
        if self.source == "parquet":
            from feature_repo.raw_source import RawSource

            if self.source_dir is None:
                raise ConfigurationError("`DEEPFM_SOURCE=parquet` needs `DEEPFM_SOURCE_DIR` (the folder of the tables)")
            return RawSource.from_folder(self.source_dir)
        if self.source == "synthetic":
            from deepfm_model import synthetic

            return synthetic.generate()
        from feature_repo import movielens

        return movielens.load(self.data_cache)


def _numbers(env: Mapping[str, str]) -> dict[str, Any]:
    """The numeric fields set in `env` (`NUMBER_VARIABLES`); unset ones keep the dataclass default.

    Raises:
        ConfigurationError: a value that is not a number; the message names the variable.
    """
    numbers = {}
    for variable, (name, convert) in NUMBER_VARIABLES.items():
        if variable in env:
            try:
                numbers[name] = convert(env[variable])
            except ValueError:
                raise ConfigurationError(
                    f"`{variable}` must be a number. Received: `{variable}={env[variable]!r}`"
                ) from None
    return numbers


def _flag(env: Mapping[str, str], variable: str) -> bool:
    """A switch: `1`, `true` or `yes` turn it on; unset, empty, `0`, `false` or `no` leave it off."""
    value = env.get(variable, "").strip().lower()
    if value not in ("", "0", "false", "no", "1", "true", "yes"):
        raise ConfigurationError(
            f"`{variable}` must be 1/true/yes or 0/false/no. Received: `{variable}={env[variable]!r}`"
        )
    return value in ("1", "true", "yes")


def _optional_int(value: str) -> int | None:
    return None if value.strip().lower() in ("", "none", "all") else int(value)


# Numeric settings: variable -> (field, how its value is read). `from_env` reads them; an error names the variable.
NUMBER_VARIABLES: dict[str, tuple[str, Callable[[str], Any]]] = {
    "DEEPFM_AUC_FLOOR": ("auc_floor", float),
    "DEEPFM_AUC_TOLERANCE": ("auc_tolerance", float),
    "DEEPFM_EPOCHS": ("epochs", int),
    "DEEPFM_BATCH_SIZE": ("batch_size", int),
    "DEEPFM_EARLY_STOPPING_PATIENCE": ("early_stopping_patience", int),
    "DEEPFM_NEGATIVES": ("negatives_per_event", int),
    "DEEPFM_SAMPLING_SEED": ("sampling_seed", int),
    "DEEPFM_MAX_SAMPLED_ROWS": ("max_sampled_rows", _optional_int),  # `none`: no cap
    "DEEPFM_NDCG_TOLERANCE": ("ndcg_tolerance", float),
    "DEEPFM_POPULARITY_TOLERANCE": ("popularity_tolerance", float),
    "DEEPFM_RANKING_MAX_USERS": ("ranking_max_users", _optional_int),
    "DEEPFM_RANKING_MAX_PAIRS": ("ranking_max_pairs", int),
    "DEEPFM_TRAIN_GPUS": ("train_gpus", int),
}


def _offline_store(value: str) -> dict:
    """`DEEPFM_FEAST_OFFLINE_STORE`: a store type (`duckdb`, `file`) or a whole Feast block as JSON."""
    if value.lstrip().startswith("{"):
        try:
            block = json.loads(value)
        except json.JSONDecodeError as error:
            raise ConfigurationError(f"`DEEPFM_FEAST_OFFLINE_STORE` is not valid JSON: {error}") from error
        if not isinstance(block, dict) or "type" not in block:
            raise ConfigurationError(f"`DEEPFM_FEAST_OFFLINE_STORE` must have a `type`. Received: {value!r}")
        return block
    return {"type": value}


def _spark_conf(value: str) -> dict[str, str]:
    """`DEEPFM_SPARK_CONF`: a JSON object of Spark settings (`{"spark.executor.memory": "4g"}`); empty: none."""
    if not value.strip():
        return {}
    try:
        conf = json.loads(value)
    except json.JSONDecodeError as error:
        raise ConfigurationError(f"`DEEPFM_SPARK_CONF` is not valid JSON: {error}") from error
    if not isinstance(conf, dict):
        raise ConfigurationError(f"`DEEPFM_SPARK_CONF` must be a JSON object of `spark.*` keys. Received: {value!r}")
    for key, setting in conf.items():
        if not key.startswith("spark."):
            raise ConfigurationError(f"`DEEPFM_SPARK_CONF` keys must start with `spark.`. Received: `{key}`")
        if isinstance(setting, dict | list) or setting is None:
            raise ConfigurationError(
                f"`DEEPFM_SPARK_CONF` values must be strings, numbers or booleans. Received: `{key}={setting!r}`"
            )
    return {key: str(setting).lower() if isinstance(setting, bool) else str(setting) for key, setting in conf.items()}


def check_reachable(config: PipelineConfig, timeout_s: float = 5.0) -> None:
    """Fail with a `ConfigurationError` naming the setting when a configured Redis, SQL registry or Spark
    standalone master (`spark://host:port`, or several for a standby: any one answering) cannot be reached.

    The first stage calls it before it writes anything, so a wrong address stops the run at once.
    """
    if config.online_store and config.online_store.get("type") == "redis":
        import redis

        address = config.online_store["connection_string"].split(",")[0]
        host, _, port = address.rpartition(":")
        try:
            redis.Redis(host=host or address, port=int(port or 6379), socket_timeout=timeout_s,
                        socket_connect_timeout=timeout_s).ping()  # fmt: skip
        except (redis.RedisError, ValueError) as error:
            name = config.settings.get("online_store", "online_store")
            raise ConfigurationError(
                f"Feast's Redis online store at `{name}={address}` is unreachable: {error}"
            ) from error
    if config.registry and config.registry.get("registry_type") == "sql":
        import sqlalchemy

        url = config.registry["path"]
        try:
            engine = sqlalchemy.create_engine(url, connect_args={"connect_timeout": int(timeout_s)})
            with engine.connect():
                pass
        except Exception as error:  # noqa: BLE001 - any driver's error means the same: this URL does not work
            name = config.settings.get("registry", "registry")
            shown = sqlalchemy.engine.make_url(url).render_as_string(hide_password=True)
            first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
            raise ConfigurationError(f"Feast's SQL registry at `{name}={shown}` is unreachable: {first}") from error
    if config.feature_engine == "spark" and config.spark_master.startswith(SPARK_STANDALONE):
        _check_spark_master(config, timeout_s)


def _check_spark_master(config: PipelineConfig, timeout_s: float) -> None:
    import socket

    errors = []
    for address in config.spark_master.removeprefix(SPARK_STANDALONE).split(","):
        host, _, port = address.strip().rpartition(":")
        try:
            socket.create_connection((host, int(port)), timeout=timeout_s).close()
            return
        except (OSError, ValueError) as error:
            errors.append(f"{address.strip()}: {error}")
    name = config.settings.get("spark_master", "spark_master")
    raise ConfigurationError(f"The Spark master at `{name}={config.spark_master}` is unreachable ({'; '.join(errors)})")
