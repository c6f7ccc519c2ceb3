"""Store: open the Feast repo, register its objects, materialize, and read training and serving features.

A repo directory holds `feature_store.yaml` and a git-ignored `data/` folder with the parquet sources, the file
registry and the SQLite online store; every path in the yaml is relative and Feast resolves it against the repo
directory. `feature_repo/` itself is the project's repo; `write_config` makes any other directory (a test's
tmp dir, a run directory) into an equivalent repo, optionally with another online or offline store.

On-demand views (the user x genre affinity) are computed from batch features on request: `online_frame` gets them
from Feast, `training_frame` retrieves their inputs with the other batch features and runs the registered view's
own transformation on the joined frame, so both sides share one function.

Offline store: `duckdb` by default (`feature_store.yaml`), measured against the Dask `file` store by `make
bench-features`: over the full MovieLens-100K training window (100k events) DuckDB was 3-4.5x faster (3.9 s
against 17.5 s; 10.9 s against 31.7 s under heavier load, 2 shared cores), with identical frames. Feast 0.67's DuckDB store reads a FileSource path against the
working directory, the Dask store against the repo directory; `apply` therefore registers absolute source paths
(resolved against the store's repo), which both read alike from any working directory.

Feast 0.67's Dask store deduplicates the joined frame on (join keys seen so far, event timestamp): with a
user x movie entity frame it silently drops every event that shares user and second with another (half of
MovieLens-100K). `training_frame` therefore retrieves each entity's views separately, on de-duplicated
(key, timestamp) frames, and joins the features back onto the events; the result is the same on any store.
"""

from __future__ import annotations

import contextlib
import copy
import datetime as dt
import uuid
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml
from feast import FeatureService, FeatureStore, FeatureView, FileSource, PushSource, RepoConfig
from feast.data_source import PushMode
from feast.on_demand_feature_view import OnDemandFeatureView

from deepfm_model.spec.dates import to_utc
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    FEATURE_NAMES,
    FEATURE_SERVICE,
    FEATURES,
    LABEL,
    MOVIE_KEY,
    MOVIE_PROFILE_VIEW,
    PICKED,
    RATING,
    USER_EVENTS_PUSH,
    USER_FRESH_VIEW,
    USER_GENRE_STATS_VIEW,
    USER_KEY,
    USER_PROFILE_VIEW,
    VIEWS,
    Kind,
)
from deepfm_model.spec.files import staged_path, write_text
from feature_repo import fresh_features
from feature_repo.definitions import OBJECTS
from feature_repo.ingest import PROFILE_TIMESTAMP
from feature_repo.source_files import REPO_DIR, data_dir

CONFIG_FILE = "feature_store.yaml"
PROFILE_VIEWS = (USER_PROFILE_VIEW, MOVIE_PROFILE_VIEW)
TRAINING_COLUMNS = (*FEATURE_NAMES, EVENT_TIMESTAMP, RATING, LABEL, PICKED)
# Entity rows (events and their sampled rows) whose features `write_training_set` retrieves at a time. Each
# retrieval scans every view's source (~5.7 s at 10M events), so chunks are large: 1M rows peak ~2 GB above the
# process' base.
TRAINING_CHUNK_ROWS = 1_000_000
PUSH_CHUNK_ROWS = 50_000  # rows per `FeatureStore.push` call
SPARK_OFFLINE_STORE = "spark"  # Feast's Spark offline store: the sources registered as `SparkSource`s


def store_config(
    repo_dir: Path = REPO_DIR,
    *,
    project: str | None = None,
    online_store: dict[str, Any] | None = None,
    offline_store: dict[str, Any] | None = None,
    registry: dict[str, Any] | str | None = None,
    batch_engine: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The `feature_store.yaml` of `repo_dir` (the project's when it has none) with the given parts replaced.

    Args:
        repo_dir: the repo whose `feature_store.yaml` is the base.
        project: Feast project name (defaults to the file's, `deepfm`).
        online_store: replacement `online_store` block, e.g. `{"type": "redis", "connection_string": ...}`.
        offline_store: replacement `offline_store` block, e.g. `{"type": "file"}`.
        registry: replacement `registry`: a path, or a block such as `{"registry_type": "sql", "path": <URL>}`.
        batch_engine: the materialization engine's block, e.g. `{"type": "spark.engine"}` (default: local).
    """
    base = Path(repo_dir) / CONFIG_FILE
    config = yaml.safe_load((base if base.is_file() else REPO_DIR / CONFIG_FILE).read_text())
    parts = (("project", project), ("online_store", online_store), ("offline_store", offline_store),
             ("registry", registry), ("batch_engine", batch_engine))  # fmt: skip
    for name, value in parts:
        if value is not None:
            config[name] = value
    return config


def write_config(repo_dir: Path, **overrides: Any) -> Path:
    """Write a `feature_store.yaml` into `repo_dir`: the project's config with the parts in `overrides` replaced.

    Args:
        repo_dir: directory to turn into a Feast repo; must not be `feature_repo/` itself.
        overrides: `project`, `online_store`, `offline_store`, `registry`, `batch_engine` as `store_config` takes
            them.

    Returns:
        Path of the written file.
    """
    repo_dir = Path(repo_dir).resolve()
    if repo_dir == REPO_DIR:
        raise ValueError(f"`repo_dir` must not be the committed repo. Received: `repo_dir={repo_dir}`")
    config = store_config(REPO_DIR, **overrides)
    return write_text(repo_dir / CONFIG_FILE, yaml.safe_dump(config, sort_keys=False))


def open_store(repo_dir: Path = REPO_DIR, **overrides: Any) -> FeatureStore:
    """The `FeatureStore` of the repo in `repo_dir`, its `feature_store.yaml` with `overrides` applied in memory.

    `overrides` are `store_config`'s: the deployment (Redis online store, SQL registry, another offline store)
    is chosen by configuration, and the committed `feature_store.yaml` stays the embedded default.
    """
    repo_dir = Path(repo_dir).resolve()
    if not (repo_dir / CONFIG_FILE).is_file():
        raise FileNotFoundError(f"No {CONFIG_FILE} in `repo_dir`; call `write_config` first. Received: {repo_dir}")
    if not any(value is not None for value in overrides.values()):
        return FeatureStore(repo_path=str(repo_dir))
    config = RepoConfig(**store_config(repo_dir, **overrides))
    config.repo_path = repo_dir
    return FeatureStore(repo_path=str(repo_dir), config=config)


def apply(store: FeatureStore) -> None:
    """Register every object of `feature_repo.definitions` (idempotent, like `feast apply`).

    Source paths are registered absolute, resolved against the store's repo directory: the DuckDB offline
    store of Feast 0.67 reads a relative path against the working directory, the file store against the repo
    directory; absolute paths read the same on both, from any working directory, without `chdir`.
    """
    repo_dir = Path(store.repo_path).resolve()
    data_dir(repo_dir).mkdir(parents=True, exist_ok=True)
    on_spark = store.config.offline_store.type == SPARK_OFFLINE_STORE
    _start_spark(store)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
        store.apply([_with_absolute_paths(obj, repo_dir, on_spark) for obj in OBJECTS])


def _with_absolute_paths(obj: Any, repo_dir: Path, on_spark: bool = False) -> Any:
    """A copy of a FileSource, or of a push source or feature view over one, whose parquet path is absolute;
    other objects as they are. With `on_spark` (Feast's Spark offline store reads `SparkSource`s only), the
    FileSource becomes a `SparkSource` over the same files: same name, path, timestamp field and description."""
    if isinstance(obj, FileSource):
        path = str(repo_dir / obj.path) if not Path(obj.path).is_absolute() else obj.path
        if on_spark:
            from feast.infra.offline_stores.contrib.spark_offline_store.spark_source import SparkSource

            return SparkSource(name=obj.name, path=path, file_format="parquet", timestamp_field=obj.timestamp_field,
                               description=obj.description)  # fmt: skip
        resolved = copy.deepcopy(obj)
        resolved.file_options.uri = path
        return resolved
    if isinstance(obj, PushSource) and isinstance(obj.batch_source, FileSource):
        resolved = copy.deepcopy(obj)
        resolved.batch_source = _with_absolute_paths(obj.batch_source, repo_dir, on_spark)
        return resolved
    if isinstance(obj, FeatureView) and isinstance(obj.batch_source, FileSource):
        resolved = copy.deepcopy(obj)
        resolved.batch_source = _with_absolute_paths(obj.batch_source, repo_dir, on_spark)
        if isinstance(obj.stream_source, PushSource):
            resolved.stream_source = _with_absolute_paths(obj.stream_source, repo_dir, on_spark)
        return resolved
    return obj


def materialize(store: FeatureStore, start: dt.datetime | pd.Timestamp, end: dt.datetime | pd.Timestamp) -> None:
    """Load the rows stamped in `[start, end]` into the online store; re-running a window rewrites the same values.

    The fresh per-user features are not materialized but pushed (`push_fresh`): each user's latest row of the
    log as of `end`, what pushing every event of the replay in time order would leave online.

    Profiles are static rows stamped at `ingest.PROFILE_TIMESTAMP`; they are small, so every call loads them
    whole (`[PROFILE_TIMESTAMP, end]`) and entities added since the last run are never missed. For the nightly
    run of `ds`, `start=dates.last_data_day(ds)` and `end=dates.data_cutoff(ds)` loads the "now" stats rows.

    Args:
        store: the feature store, objects applied and sources written.
        start: first event timestamp loaded for the stats views (UTC, or naive meaning UTC).
        end: last event timestamp loaded, inclusive.
    """
    start, end = _utc(start), _utc(end)
    if end < start:
        raise ValueError(f"`end` must not precede `start`. Received: `start={start}`, `end={end}`")
    _start_spark(store)
    stats_views = [v for v in (*VIEWS, USER_GENRE_STATS_VIEW) if v not in (*PROFILE_VIEWS, USER_FRESH_VIEW)]
    store.materialize(_utc(PROFILE_TIMESTAMP), end, feature_views=list(PROFILE_VIEWS))
    store.materialize(start, end, feature_views=stats_views)
    push_fresh(store, fresh_features.latest_state(data_dir(Path(store.repo_path)) / USER_FRESH_VIEW, until=end))


def push_fresh(store: FeatureStore, rows: pd.DataFrame, chunk_rows: int = PUSH_CHUNK_ROWS) -> int:
    """Write `user_fresh` rows (`fresh_features.LOG_COLUMNS`) to the online store through the push source.

    Returns:
        Rows pushed.
    """
    for begin in range(0, len(rows), chunk_rows):
        store.push(USER_EVENTS_PUSH, rows.iloc[begin : begin + chunk_rows], to=PushMode.ONLINE)
    return len(rows)


def training_frame(store: FeatureStore, events: pd.DataFrame) -> pd.DataFrame:
    """Point-in-time correct features of every labelled event, through the `features.FEATURE_SERVICE` service.

    Args:
        store: the feature store, objects applied and sources written.
        events: the entity frame of `ingest.labelled_events` (keys, event_timestamp, rating, label), with
            sampled rows (`negatives.sample_unrated`) or without (`picked` is then 1); other columns are kept,
            after `TRAINING_COLUMNS`.

    Returns:
        Columns `TRAINING_COLUMNS` (`features.FEATURE_NAMES` + event_timestamp, rating, label, picked) and the
        events' other columns, one row per event, sorted by event_timestamp; categoricals and genres as str,
        numerics as float64, rating, label and picked as int64; missing values stay null for validation to see.
    """
    _start_spark(store)
    service = store.get_feature_service(FEATURE_SERVICE)
    events = events.copy()
    if PICKED not in events:
        events[PICKED] = 1
    extra = [column for column in events.columns if column not in TRAINING_COLUMNS]
    events[EVENT_TIMESTAMP] = pd.to_datetime(events[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    frame = events
    groups, on_demand = service_plan(store, service)
    for keys, refs in groups.items():
        entity_df = events[[*keys, EVENT_TIMESTAMP]].drop_duplicates(ignore_index=True)
        with warnings.catch_warnings(), _entity_rows(store, entity_df) as entity_rows:
            warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
            features = store.get_historical_features(entity_df=entity_rows, features=refs).to_df()
        features[EVENT_TIMESTAMP] = pd.to_datetime(features[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
        frame = frame.merge(features, on=[*keys, EVENT_TIMESTAMP], how="left", validate="many_to_one")
    for view in on_demand:  # the registered view's own function, as on an online read
        frame = frame.join(view.feature_transformation.transform(frame))
    frame = _typed(frame)
    frame[RATING] = frame[RATING].astype("int64")
    frame[LABEL] = frame[LABEL].astype("int64")
    frame[PICKED] = frame[PICKED].astype("int64")
    frame[EVENT_TIMESTAMP] = pd.to_datetime(frame[EVENT_TIMESTAMP], utc=True)
    frame = frame[[*TRAINING_COLUMNS, *extra]]
    return frame.sort_values([EVENT_TIMESTAMP, USER_KEY, MOVIE_KEY], kind="stable").reset_index(drop=True)


@contextlib.contextmanager
def _entity_rows(store: FeatureStore, entity_df: pd.DataFrame):
    """The entity rows as the offline store takes them: on Spark, a Spark frame over a parquet file of them in the
    repo's data folder (which the workers read, as they read the sources), removed afterwards.

    A pandas frame handed to Spark is a local relation whose rows travel inside every task that reads it, and
    Feast's Spark query reads its entity view once per feature view: at 1M rows tasks of 17 MB, and at 10M events
    the driver's 4 GB heap ran out 17 minutes into the training set: a cached frame's rows still travel with the
    tasks (caching did cut the 1M training set from 519.8 s to 343.8 s).

    The timestamps go as UTC wall-clock times (`timestamp_ntz`): Feast bounds each source by the rows' first and
    last instants collected from the frame, and PySpark collects a `timestamp` as this process's local time.
    """
    if store.config.offline_store.type != SPARK_OFFLINE_STORE:
        yield entity_df
        return
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    path = data_dir(Path(store.repo_path)) / f"entity-rows-{uuid.uuid4().hex}.parquet"  # no dot: Spark skips those
    try:
        entity_df.astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"}).to_parquet(path, index=False)
        frame = SparkSession.getActiveSession().read.parquet(str(path))
        yield frame.withColumn(EVENT_TIMESTAMP, F.col(EVENT_TIMESTAMP).cast("timestamp_ntz"))
    finally:
        path.unlink(missing_ok=True)


def _start_spark(store: FeatureStore) -> None:
    """On Feast's Spark offline store, the session of its `spark_conf` started first: Feast 0.67 reuses the active
    session, and its Spark engine would start one without these settings (`spark_engine.feast_blocks`)."""
    if store.config.offline_store.type == SPARK_OFFLINE_STORE:
        from feature_repo import spark_engine

        conf = dict(store.config.offline_store.spark_conf or {})
        spark_engine.session(conf.pop("spark.master", "local[2]"), conf)


def online_features(store: FeatureStore, user_id: str, movie_ids: list[str]) -> pd.DataFrame:
    """Serving features of one user against candidate movies: one row per movie id, in the given order.

    Returns:
        Columns `features.FEATURE_NAMES`, typed as in `training_frame`; unknown ids give nulls.
    """
    pairs = pd.DataFrame({USER_KEY: str(user_id), MOVIE_KEY: [str(movie_id) for movie_id in movie_ids]})
    return online_frame(store, pairs)


def online_frame(store: FeatureStore, pairs: pd.DataFrame) -> pd.DataFrame:
    """Serving features of arbitrary (user_id, movie_id) pairs, one row per pair, in the given order.

    Returns:
        Columns `features.FEATURE_NAMES`, typed as in `training_frame`; unknown ids give nulls.
    """
    rows = [{USER_KEY: str(u), MOVIE_KEY: str(m)} for u, m in zip(pairs[USER_KEY], pairs[MOVIE_KEY], strict=True)]
    service = store.get_feature_service(FEATURE_SERVICE)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
        frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return _typed(frame)[list(FEATURE_NAMES)].reset_index(drop=True)


def split_sizes(rows: int, valid_frac: float = 0.1, test_frac: float = 0.1) -> tuple[int, int, int]:
    """Rows of (train, valid, test) when `rows` events are split by time (DESIGN.md protocol)."""
    for name, value in (("valid_frac", valid_frac), ("test_frac", test_frac)):
        if not 0 <= value < 1:
            raise ValueError(f"`{name}` must be in [0, 1). Received: `{name}={value}`")
    if valid_frac + test_frac >= 1:
        raise ValueError(
            f"`valid_frac + test_frac` must be below 1. Received: `valid_frac={valid_frac}`, `test_frac={test_frac}`"
        )
    n_test = round(rows * test_frac)
    n_valid = round(rows * valid_frac)
    return rows - n_valid - n_test, n_valid, n_test


def split_by_time(
    frame: pd.DataFrame, valid_frac: float = 0.1, test_frac: float = 0.1
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Split by event time (DESIGN.md protocol): the last `test_frac` test, the `valid_frac` before it validation.

    Returns:
        (train, valid, test), each sorted by event_timestamp with a fresh index.
    """
    n_train, n_valid, _ = split_sizes(len(frame), valid_frac, test_frac)
    ordered = frame.sort_values(EVENT_TIMESTAMP, kind="stable").reset_index(drop=True)
    return (
        ordered.iloc[:n_train].reset_index(drop=True),
        ordered.iloc[n_train : n_train + n_valid].reset_index(drop=True),
        ordered.iloc[n_train + n_valid :].reset_index(drop=True),
    )


def write_training_set(store: FeatureStore, events_path: Path, split_paths: tuple[Path, Path, Path],
                       chunk_rows: int = TRAINING_CHUNK_ROWS, sampled_path: Path | None = None) -> tuple[int, int, int]:  # fmt: skip
    """`training_frame` of every event in `events_path`, split by time into the (train, valid, test) files.

        Each chunk holds about `chunk_rows` entity rows, events and their sampled rows together (the events are read
    `chunk_rows / (1 + sampled rows per event)` at a time), so memory holds one chunk's features however long the
    history and however many rows are sampled per event.
        `events_path` must be sorted by event_timestamp, user_id, movie_id (`ingest.write_labelled_events`), the
        order `training_frame` gives each chunk, so the chunks follow one another and the files equal
        `split_by_time(training_frame(store, all events))`. The split sizes count events. With `sampled_path`
        (`negatives.write_sampled`: rows ordered by `event_position`), each chunk's sampled rows are retrieved with
        it and go to the split of their event, in time order among its rows. Each file is written under a temporary
        name and renamed.

        Returns:
            Rows written to (train, valid, test), sampled rows included.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from feature_repo.negatives import EVENT_POSITION

    events = pq.ParquetFile(events_path)
    sizes = split_sizes(events.metadata.num_rows)
    ends = np.cumsum(sizes)
    sampled = _sampled_by_range(sampled_path, chunk_rows) if sampled_path is not None else None
    sampled_rows = pq.ParquetFile(sampled_path).metadata.num_rows if sampled_path is not None else 0
    event_chunk = max(1, int(chunk_rows / (1 + sampled_rows / max(events.metadata.num_rows, 1))))
    if sampled is not None:
        next(sampled)
    schema = training_schema()
    written = [0, 0, 0]
    with contextlib.ExitStack() as stack:
        staged = [stack.enter_context(staged_path(path)) for path in split_paths]
        writers = [stack.enter_context(pq.ParquetWriter(path, schema)) for path in staged]
        position = 0
        for batch in events.iter_batches(batch_size=event_chunk):
            chunk = batch.to_pandas()
            chunk[EVENT_POSITION] = np.arange(position, position + len(chunk), dtype=np.int64)
            chunk[PICKED] = 1
            extra = sampled.send(position + len(chunk)) if sampled is not None else None
            if extra is not None and len(extra):
                chunk = pd.concat([chunk, extra], ignore_index=True)
            frame = training_frame(store, chunk)
            split_of = np.searchsorted(ends, frame[EVENT_POSITION].to_numpy(), side="right")
            for split in range(len(split_paths)):
                part = frame[split_of == split].drop(columns=EVENT_POSITION)
                if len(part):
                    writers[split].write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False))
                    written[split] += len(part)
            position += len(chunk) - (0 if extra is None else len(extra))
    return tuple(written)


def _sampled_by_range(path: Path, batch_rows: int):
    """A generator: sent an event position, it returns the sampled rows of the events before it (not yet given)."""
    import pyarrow.parquet as pq

    from feature_repo.negatives import EVENT_POSITION

    held = pd.DataFrame()
    batches = pq.ParquetFile(path).iter_batches(batch_size=batch_rows)
    end = yield None
    while True:
        while not len(held) or held[EVENT_POSITION].iloc[-1] < end:
            batch = next(batches, None)
            if batch is None:
                break
            held = pd.concat([held, batch.to_pandas()], ignore_index=True)
        take = held[EVENT_POSITION].to_numpy() < end if len(held) else np.zeros(0, dtype=bool)
        out, held = held[take], held[~take].reset_index(drop=True)
        end = yield out.reset_index(drop=True)


def training_schema():
    """The Arrow schema of a training snapshot file (`TRAINING_COLUMNS`, typed as `training_frame` types them)."""
    import pyarrow as pa

    types = {f.name: pa.float64() if f.kind is Kind.NUMERIC else pa.string() for f in FEATURES}
    types |= {EVENT_TIMESTAMP: pa.timestamp("ns", tz="UTC"), RATING: pa.int64(), LABEL: pa.int64(), PICKED: pa.int64()}
    return pa.schema([(name, types[name]) for name in TRAINING_COLUMNS])


def service_plan(
    store: FeatureStore, service: FeatureService
) -> tuple[dict[tuple[str, ...], list[str]], list[OnDemandFeatureView]]:
    """What to retrieve for a service: batch references grouped by join keys, and its on-demand views.

    The batch references (`view:feature`) include the inputs of the on-demand views, each once.
    """
    on_demand_names = {view.name for view in store.list_on_demand_feature_views()}
    groups: dict[tuple[str, ...], list[str]] = {}
    on_demand: list[OnDemandFeatureView] = []

    def add(view_name: str, feature_names: list[str]) -> None:
        view = store.get_feature_view(view_name)
        refs = groups.setdefault(tuple(column.name for column in view.entity_columns), [])
        refs.extend(ref for ref in (f"{view_name}:{name}" for name in feature_names) if ref not in refs)

    for projection in service.feature_view_projections:
        if projection.name in on_demand_names:
            view = store.get_on_demand_feature_view(projection.name)
            on_demand.append(view)
            for source in view.source_feature_view_projections.values():
                add(source.name, [field.name for field in source.features])
        else:
            add(projection.name, [field.name for field in projection.features])
    return groups, on_demand


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.copy()
    for feature in FEATURES:
        column = frame[feature.name]
        if feature.kind is Kind.NUMERIC:
            frame[feature.name] = pd.to_numeric(column, errors="coerce").astype("float64")
        else:
            frame[feature.name] = column.astype(object).where(column.isna(), column.astype(str))
    return frame


def _utc(value: dt.datetime | pd.Timestamp) -> dt.datetime:
    return to_utc(value).to_pydatetime()


def create_sql_database(url: str) -> bool:
    """Create the database of a SQL registry URL on its server when it does not exist; `True` if it was created.

    For deployments whose Feast registry is in Postgres (`docker/airflow-init.sh`); connects to the server's
    `postgres` database to do it.
    """
    import sqlalchemy

    target = sqlalchemy.engine.make_url(url)
    admin = sqlalchemy.create_engine(target.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as db:
            exists = db.execute(sqlalchemy.text("SELECT 1 FROM pg_database WHERE datname = :name"),
                                {"name": target.database}).first()  # fmt: skip
            if exists:
                return False
            db.execute(sqlalchemy.text(f'CREATE DATABASE "{target.database}"'))
            return True
    finally:
        admin.dispose()
