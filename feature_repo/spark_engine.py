"""The nightly feature work on Spark (`DEEPFM_FEATURE_ENGINE=spark`): the same definitions, the same files.

DuckDB is the embedded engine; on a cluster the stages that read the event history run on Spark instead, and
the driver never holds the history. Nothing is written twice:

- the SQL: `SparkConnection` answers the part of DuckDB's connection API that `raw_source.check`,
  `daily_stats.update`, `ingest.write_sources` and `ingest.write_labelled_events` use, and `spark_sql` renders
  their DuckDB SQL for Spark in one place (quoting, string literals, `TIMESTAMPTZ`, full-match regexes,
  `read_parquet` lists, a few function names, decimal literals as doubles, seeded reservoir samples). `COPY ...
  TO` becomes a Spark write moved into the same file names.
- the fold: `fresh_features.day_rows`, the function DuckDB's fold calls on a batch of days, runs on each user's
  state and events, a bucket of users per call (`cogroup(...).applyInPandas`), and the rows go to the same day
  files.
- the sampled unrated rows: `negatives.draw_unrated`, the function DuckDB's sampling calls on every event, runs on
  a bucket of users per call (`write_sampled`), and the rows go to the same file.

The outputs equal DuckDB's (`tests/features/test_spark_engine.py`: two nights on both engines, counts exact,
rates within 1e-9). A manifest records the engine that wrote it (`daily_stats.engine_version`): the days'
fingerprints are each engine's own hashes, so a home switched to the other engine is recomputed once.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import os
import re
import shutil
import sys
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import pyarrow.parquet as pq

from deepfm_model.spec.features import EVENT_TIMESTAMP, LABEL, MOVIE_KEY, PICKED, RATING, USER_KEY
from deepfm_model.spec.files import move_into_place
from deepfm_model.spec.raw_data import RawData
from feature_repo import fresh_features, negatives, raw_source, sql

if TYPE_CHECKING:
    from pyspark.sql import DataFrame, SparkSession

PROJECT_ROOT = Path(__file__).resolve().parents[1]
BUCKET = "user_bucket"  # the fold's grouping column: users by the hash of their id
# What the files and the SQL's meaning need, whatever else the deployment sets: UTC days, microsecond stamps
# flagged UTC as DuckDB writes them, and the driver's Python on the workers of a local master.
REQUIRED_CONF = {
    "spark.sql.session.timeZone": "UTC",
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
}
DEFAULT_CONF = {
    "spark.ui.enabled": "false",
    "spark.sql.shuffle.partitions": "8",
    # The driver holds a training chunk's features (`store.TRAINING_CHUNK_ROWS` rows) as Arrow on their way to
    # pandas: 1M rows ran its 1 GB default out of heap. On a local master the executors share this heap.
    "spark.driver.memory": "4g",
    # A Java heap run out leaves the driver's Python waiting forever on its py4j call: the JVM exits instead, and
    # the stage fails with py4j's error.
    "spark.driver.extraJavaOptions": "-XX:+ExitOnOutOfMemoryError",
}
# DuckDB's name of each Spark type: `raw_source.TYPES` lists the types a raw column may arrive as.
_DUCKDB_TYPES = {"string": "VARCHAR", "bigint": "BIGINT", "int": "INTEGER", "smallint": "SMALLINT", "tinyint": "TINYINT",
                 "double": "DOUBLE", "float": "FLOAT", "timestamp": "TIMESTAMP WITH TIME ZONE",
                 "timestamp_ntz": "TIMESTAMP", "boolean": "BOOLEAN", "void": '"NULL"', "date": "DATE"}  # fmt: skip
_STRFTIME = {"%Y": "yyyy", "%m": "MM", "%d": "dd", "%H": "HH", "%M": "mm", "%S": "ss"}


def session(master: str, conf: Mapping[str, str] | None = None) -> SparkSession:
    """The Spark session of the feature work: `master` (`local[2]`, `spark://host:7077`) with `conf` passed through.

    `REQUIRED_CONF` is applied last: the outputs' meaning depends on it.
    """
    from pyspark.sql import SparkSession

    if master.startswith("local"):  # the workers are this machine's: this Python, and this checkout importable
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        paths = [str(PROJECT_ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
        os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    builder = SparkSession.builder.master(master).appName("deepfm-features")
    for key, value in {**DEFAULT_CONF, **(conf or {}), **REQUIRED_CONF}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def feast_blocks(master: str, conf: Mapping[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The `feature_store.yaml` blocks that put Feast's offline work on Spark: the Spark offline store (the training
    set's point-in-time join) and the Spark engine (materialization into the online store), for `store_config`.

    Feast 0.67 reuses the active session, and its engine passes its whole block as Spark settings (so `spark_conf`
    there would be ignored): `session()` must run first in the process. The offline store's `spark_conf` is the
    same session's, should Feast start one itself.
    """
    spark_conf = {"spark.master": master, **DEFAULT_CONF, **(conf or {}), **REQUIRED_CONF}
    return {"offline_store": {"type": "spark", "spark_conf": spark_conf}, "batch_engine": {"type": "spark.engine"}}


# --- DuckDB SQL rendered for Spark -------------------------------------------------------------------------------

_LITERAL = r"'(?:[^']|'')*'"
_TOKENS = re.compile(rf"({_LITERAL})|(\"(?:[^\"]|\"\")*\")")
_READ_PARQUET = re.compile(rf"read_parquet\((\[[^\]]*\]|{_LITERAL})(?:, union_by_name = true)?\)")
_FULL_MATCH = re.compile(rf"regexp_full_match\(((?:[^,()]|\([^()]*\))+), ({_LITERAL})\)")
_SPLIT = re.compile(rf"string_split\(((?:[^,()]|\([^()]*\))+), ({_LITERAL})\)")
_STRFTIME_CALL = re.compile(rf"strftime\(((?:[^,()]|\([^()]*\))+), ({_LITERAL})\)")
_WINDOW = re.compile(r" WINDOW (\w+) AS (\([^()]*\))")
_SAMPLE = re.compile(r" USING SAMPLE reservoir\((\d+) ROWS\) REPEATABLE \((\d+)\)")
_WORDS = [(re.compile(rf"\b{duck}\b"), spark) for duck, spark in (
    ("TIMESTAMPTZ", "TIMESTAMP"), ("VARCHAR", "STRING"), ("list_value", "array"), ("list_contains", "array_contains"),
    ("hash", "xxhash64"), ("CREATE OR REPLACE VIEW", "CREATE OR REPLACE TEMP VIEW"))]  # fmt: skip
_DECIMAL = re.compile(r"(?<![\w.])(\d+\.\d+)(?![\w.])")  # DuckDB's 2.5 is Spark's 2.5D (Spark: a DECIMAL)


def _text(literal: str) -> str:
    return literal[1:-1].replace("''", "'")


def spark_sql(query: str, table_of_files: Any = None) -> str:
    """`query`, DuckDB SQL as this project writes it, rendered for Spark SQL.

    Args:
        query: the DuckDB SQL.
        table_of_files: called with the paths of each `read_parquet(...)`; returns the name of a view over them.
    """
    if table_of_files is not None:
        query = _READ_PARQUET.sub(lambda m: table_of_files(_paths(m.group(1))), query)
    for name, window in _WINDOW.findall(query):  # Spark's parser misreads `OVER name - x`: the window inlined
        query = re.sub(rf"OVER {name}\b", f"OVER {window}", query.replace(f" WINDOW {name} AS {window}", ""))
    query = _SAMPLE.sub(r" ORDER BY rand(\2) LIMIT \1", query)  # a seeded uniform sample: a top-N, no full sort
    query = _FULL_MATCH.sub(lambda m: f"({m.group(1)} RLIKE {sql.literal('^(?:' + _text(m.group(2)) + ')$')})", query)
    query = _SPLIT.sub(lambda m: f"split({m.group(1)}, {sql.literal(re.escape(_text(m.group(2))))}, -1)", query)
    query = _STRFTIME_CALL.sub(lambda m: f"date_format({m.group(1)}, {sql.literal(_java_format(_text(m.group(2))))})",
                               query)  # fmt: skip
    parts, end = [], 0
    for match in _TOKENS.finditer(query):
        parts += [_spark_text(query[end : match.start()])]
        if match.group(1):  # a string literal: Spark reads backslashes as escapes
            parts += ["'" + _text(match.group(1)).replace("\\", "\\\\").replace("'", "\\'") + "'"]
        else:
            parts += ["`" + match.group(2)[1:-1].replace('""', '"').replace("`", "``") + "`"]
        end = match.end()
    return "".join([*parts, _spark_text(query[end:])])


def _spark_text(text: str) -> str:
    for word, spark in _WORDS:
        text = word.sub(spark, text)
    return _DECIMAL.sub(r"\1D", text)


def _java_format(strftime: str) -> str:
    for directive, pattern in _STRFTIME.items():
        strftime = strftime.replace(directive, pattern)
    return strftime


def _paths(files: str) -> list[str]:
    return [_text(literal) for literal in re.findall(_LITERAL, files)]


# --- A connection answering what the DuckDB code asks -------------------------------------------------------------


class SparkResult:
    """The rows of a Spark query, read as DuckDB's results are: `fetchone`, `fetchall`, `df`, `description`."""

    def __init__(self, frame: DataFrame | None, rows: list[tuple] | None = None, names: list[str] | None = None):
        self._frame, self._rows = frame, rows
        self.description = [(name,) for name in (names if frame is None else frame.columns)]

    def fetchall(self) -> list[tuple]:
        if self._rows is None:
            from pyspark.sql import functions as F

            types = dict(self._frame.dtypes)
            # Through TIMESTAMP_NTZ: the UTC wall clock, as DuckDB's UTC connection returns it.
            plain = self._frame.select(*[F.col(c).cast("timestamp_ntz").alias(c) if types[c] == "timestamp" else c
                                         for c in self._frame.columns])  # fmt: skip
            self._rows = [tuple(_python(value) for value in row) for row in plain.collect()]
        return self._rows

    def fetchone(self) -> tuple | None:
        rows = (
            self.fetchall() if self._rows is not None else [tuple(_python(v) for v in r) for r in self._frame.take(1)]
        )
        return rows[0] if rows else None

    def df(self) -> pd.DataFrame:
        """The rows as pandas, timestamps as DuckDB gives them (microseconds, UTC)."""
        frame = self._frame.toPandas()
        for column, kind in self._frame.dtypes:
            if kind == "timestamp":
                frame[column] = pd.to_datetime(frame[column]).dt.tz_localize("UTC").astype("datetime64[us, UTC]")
        return frame


def _python(value: object) -> object:
    return value.replace(tzinfo=dt.UTC) if isinstance(value, dt.datetime) else value


class SparkConnection:
    """What `raw_source`, `daily_stats` and `ingest` ask of a DuckDB connection, answered by a Spark session.

    `execute` takes the project's DuckDB SQL (`spark_sql`): queries, `CREATE OR REPLACE [TEMP] VIEW`, `CREATE OR
    REPLACE TEMP TABLE` (a cached view), `DESCRIBE <view>` (DuckDB's type names) and `COPY (query) TO 'path'
    (FORMAT parquet[, PARTITION_BY (column)])`, which writes the files DuckDB would: one file at `path`, or one
    file per value under `path/<column>=<value>/`.
    """

    def __init__(self, spark: SparkSession) -> None:
        self.spark = spark
        self.engine_version = f"spark {spark.version}"
        self._names = itertools.count()

    def sql(self, query: str) -> DataFrame:
        """The Spark frame of a DuckDB query."""
        return self.spark.sql(spark_sql(query, self._files_view))

    def execute(self, statement: str) -> SparkResult:
        statement = statement.strip()
        if match := re.fullmatch(r"DESCRIBE (\w+)", statement):
            fields = self.spark.table(match.group(1)).schema.fields
            return SparkResult(None, [(f.name, _duckdb_type(f.dataType)) for f in fields], ["name", "type"])
        if match := re.fullmatch(r"CREATE OR REPLACE TEMP TABLE (\w+) AS (.*)", statement, re.DOTALL):
            self.sql(match.group(2)).cache().createOrReplaceTempView(match.group(1))
            return SparkResult(None, [], [])
        if match := re.fullmatch(rf"COPY \((.*)\) TO ({_LITERAL}) \(FORMAT parquet(?:, PARTITION_BY \((\w+)\))?\)",
                                 statement, re.DOTALL):  # fmt: skip
            self._copy(self.sql(match.group(1)), Path(_text(match.group(2))), match.group(3))
            return SparkResult(None, [], [])
        if statement.startswith("CREATE "):
            self.sql(statement)
            return SparkResult(None, [], [])
        return SparkResult(self.sql(statement))

    def register(self, name: str, frame: pd.DataFrame) -> None:
        """A view over a frame of the driver (tables in memory: `RawData`)."""
        self.spark.createDataFrame(frame).createOrReplaceTempView(name)

    def _files_view(self, paths: list[str]) -> str:
        name = f"files_{next(self._names)}"
        self.spark.read.parquet(*paths).createOrReplaceTempView(name)
        return name

    def _copy(self, frame: DataFrame, path: Path, partition: str | None) -> None:
        if partition is None:
            write_single(frame, path)
        else:  # all rows of a value in one task: one file per value, as DuckDB writes
            frame.repartition(partition).write.partitionBy(partition).mode("overwrite").parquet(str(path))


def write_single(frame: DataFrame, path: Path) -> None:
    """`frame` as one parquet file at `path` (Spark writes a folder of parts: one part, moved into place)."""
    folder = path.parent / f".spark-{uuid.uuid4().hex}"
    try:
        frame.coalesce(1).write.mode("overwrite").parquet(str(folder))
        parts = sorted(folder.glob("part-*.parquet"))
        if not parts:  # an empty result: a file with the schema only
            frame.limit(0).toPandas().to_parquet(folder / "part-empty.parquet", index=False)
            parts = [folder / "part-empty.parquet"]
        move_into_place(parts[0], path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _duckdb_type(kind: Any) -> str:
    name = kind.simpleString()
    if name.startswith("decimal"):
        return name.upper()
    return _DUCKDB_TYPES.get(name, name.upper())


@contextlib.contextmanager
def connect(raw: RawData | raw_source.RawSource, spark: SparkSession) -> Iterator[SparkConnection]:
    """`raw_source.connect` on Spark: views `raw_events`, `raw_users`, `raw_movies` over the tables as delivered.

    Files are read by Spark (a folder of parquet or CSV files at any depth, columns united by name); tables in
    memory are handed to Spark. `raw_source.check(con)` then checks them and creates the typed views.
    """
    source = raw_source.as_source(raw)
    con = SparkConnection(spark)
    for table in raw_source.TABLES:
        if source.frames is not None:
            con.register(f"raw_{table}", getattr(source.frames, table))
            continue
        form, path = raw_source.table_files(Path(source.location), table)
        reader = spark.read.option("recursiveFileLookup", "true").option("pathGlobFilter", f"*.{form}")
        if form == "csv":
            frame = reader.option("header", "true").option("inferSchema", "true").csv(str(path))
        else:
            frame = reader.option("mergeSchema", "true").parquet(str(path))
        frame.createOrReplaceTempView(f"raw_{table}")
    try:
        yield con
    finally:
        spark.catalog.clearCache()


# --- The fresh-features fold per user --------------------------------------------------------------------------------


def update_fresh(con: SparkConnection, cutoff: pd.Timestamp, data_dir: Path, seed_stamp: pd.Timestamp,
                 days: dict[str, list] | None = None) -> int:  # fmt: skip
    """`fresh_features.update` with the days folded and the now rows written by Spark (`_fold_days`, `_write_now`)."""
    return fresh_features.update(con, cutoff, data_dir, seed_stamp, days, fold_days=_fold_days, write_now=_write_now)


def _empty_rows() -> pd.DataFrame:
    """`fresh_features.day_rows` without rows: its columns and types."""
    empty = fresh_features.empty_state()
    return empty.assign(**{fresh_features.DAY: np.zeros(0, np.int64), fresh_features.CARRIED: np.zeros(0, bool)})


def _log_schema() -> str:
    """The Spark schema of `fresh_features.day_rows`' frames (`LOG_COLUMNS`, `DAY`, `CARRIED`)."""
    kinds = {"object": "string", "float64": "double", "int64": "bigint", "bool": "boolean"}
    return ", ".join(
        f"{column} {'timestamp' if column == EVENT_TIMESTAMP else kinds[str(kind)]}"
        for column, kind in _empty_rows().dtypes.items()
    )


def _latest(con: SparkConnection, folder: Path, before_day: str) -> DataFrame:
    files = fresh_features.log_files(folder, before_day)
    return con.sql(fresh_features.latest_query(files))


def _fold_days(con: SparkConnection, folder: Path, scratch: Path, days: dict[str, list], first: str) -> None:
    """`fresh_features._fold_days` on Spark: the users' events from day `first` on, folded onto their state by
    `fresh_features.day_rows`, a bucket of users (by the hash of their id) per call, the buckets in parallel
    tasks; the rows go to the same day files. One call per user (grouped by user) took a Python worker 10 ms a
    user: over 8 minutes for the 50,000 users of a 1M-event night, where DuckDB's whole ingest took 34 s."""
    state = _latest(con, folder, first)
    movies = con.execute(f"SELECT {MOVIE_KEY}, coalesce(genres, '') AS genres FROM movies").df()
    genres = pd.Series(movies["genres"].to_numpy(), index=movies[MOVIE_KEY].astype(str).to_numpy())
    events = con.sql(f"SELECT {USER_KEY}, {MOVIE_KEY}, {RATING}, {EVENT_TIMESTAMP} FROM labelled "
                     f"WHERE day >= {sql.instant(first)}")  # fmt: skip
    schema = _log_schema()
    from pyspark.sql import functions as F

    def fold_bucket(bucket_events: pd.DataFrame, bucket_state: pd.DataFrame) -> pd.DataFrame:
        if bucket_events.empty:
            return _empty_rows()
        if bucket_state.empty:  # users without a seed row (not in `users`): Spark hands a frame without columns
            bucket_state = fresh_features.empty_state()
        rows = fresh_features.day_rows(bucket_state.drop(columns=BUCKET, errors="ignore"),
                                       bucket_events.drop(columns=BUCKET), genres)  # fmt: skip
        return rows.astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"})

    rows = _by_user_bucket(con, events).cogroup(_by_user_bucket(con, state)).applyInPandas(fold_bucket, schema)
    part = "part"

    stamped = rows.withColumn(
        part, F.date_format(F.timestamp_seconds(F.col(fresh_features.DAY) * 86_400), "yyyy-MM-dd")
    )
    ordered = (stamped.repartition(part)
               .sortWithinPartitions(part, F.col(fresh_features.CARRIED).desc(), USER_KEY, EVENT_TIMESTAMP)
               .select(*fresh_features.LOG_COLUMNS, part))  # fmt: skip
    staging = scratch / f".staging-{uuid.uuid4().hex}"
    try:
        ordered.write.partitionBy(part).parquet(str(staging))
        for day_folder in sorted(staging.glob(f"{part}=*")):
            (file,) = day_folder.glob("*.parquet")
            move_into_place(file, folder / f"{day_folder.name.removeprefix(part + '=')}.parquet", sync_dir=False)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _by_user_bucket(con: SparkConnection, frame: DataFrame):
    """`frame` grouped by a bucket of users (the hash of their id): a few buckets per core, each a pandas call."""
    from pyspark.sql import functions as F

    buckets = max(4 * con.spark.sparkContext.defaultParallelism, 4)
    return frame.withColumn(BUCKET, F.pmod(F.hash(USER_KEY), F.lit(buckets))).groupBy(BUCKET)


def _write_now(con: SparkConnection, folder: Path, cutoff: pd.Timestamp, path: Path) -> None:
    """`fresh_features._write_now` on Spark: each user's latest row before `cutoff`, stamped `cutoff`."""
    from pyspark.sql import functions as F

    latest = _latest(con, folder, cutoff.strftime("%Y-%m-%d"))
    restamped = latest.withColumn(EVENT_TIMESTAMP, F.lit(cutoff.to_pydatetime()).cast("timestamp"))
    write_single(restamped.select(*fresh_features.LOG_COLUMNS).orderBy(USER_KEY), path)


# --- The sampled unrated rows per user -------------------------------------------------------------------------------


def write_sampled(con: SparkConnection, events_path: Path, catalogue: np.ndarray, per_event: int, seed: int,
                  path: Path, max_rows: int | None = None) -> negatives.SamplingRecord:  # fmt: skip
    """`negatives.write_sampled` on Spark: `negatives.draw_unrated` on each bucket of users' events (whole
    histories) in parallel tasks, an event's position its row in the labelled events' one file
    (`_metadata.row_index`); the draws depend on the seed and the position alone, so the rows equal DuckDB's."""
    from pyspark.sql import functions as F

    catalogue = negatives.check_arguments(catalogue, per_event, max_rows)
    total = pq.ParquetFile(events_path).metadata.num_rows
    events = con.spark.read.parquet(str(events_path)).select(
        *negatives.EVENT_COLUMNS, F.col("_metadata.row_index").alias(negatives.EVENT_POSITION)
    )
    movies = con.spark.createDataFrame(pd.DataFrame({MOVIE_KEY: catalogue}))
    known = events.join(F.broadcast(movies), MOVIE_KEY, "left_semi").count()

    def sample_bucket(bucket: pd.DataFrame) -> pd.DataFrame:
        return negatives.draw_unrated(bucket.drop(columns=BUCKET), catalogue, per_event, seed, total, max_rows)

    counters = (RATING, LABEL, PICKED, negatives.EVENT_POSITION, negatives.DRAW)
    schema = ", ".join([f"{USER_KEY} string, {MOVIE_KEY} string, {EVENT_TIMESTAMP} timestamp",
                        *(f"{column} bigint" for column in counters)])  # fmt: skip
    draws = _by_user_bucket(con, events).applyInPandas(sample_bucket, schema).cache()
    try:
        drawn, rows = draws.agg(F.count("*"), F.count(MOVIE_KEY)).first()
        kept = draws.where(F.col(MOVIE_KEY).isNotNull()).orderBy(negatives.EVENT_POSITION, negatives.DRAW)
        write_single(kept.drop(negatives.DRAW), path)
    finally:
        draws.unpersist()
    return negatives.sampling_record(per_event, seed, total, known, drawn, rows, len(catalogue), max_rows)
