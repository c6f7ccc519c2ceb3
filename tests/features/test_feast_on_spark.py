"""Feast's offline work on Spark equals DuckDB's: the training set through Feast's Spark offline store (the same
rows and values), and materialization through Feast's Spark engine into Redis (the same online rows, the same
skew-check verdict), over one repo's sources."""

from __future__ import annotations

import time
from collections.abc import Iterator

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, USER_KEY
from feature_repo import spark_engine, store
from feature_repo.skew import skew_report

from .conftest import DS, redis_repo, repo_with

MASTER = "local[2]"
SETTINGS = {"spark.sql.shuffle.partitions": "2"}
NOW = data_cutoff(DS) + pd.Timedelta(hours=1)


@pytest.fixture(scope="module")
def spark() -> Iterator:
    session = spark_engine.session(MASTER, SETTINGS)  # before Feast: it reuses the active session
    yield session
    session.stop()


@pytest.fixture(params=["UTC", "America/New_York"])
def local_zone(request, monkeypatch) -> Iterator[str]:
    """This process's local time zone (Python turns Spark's collected timestamps into local wall-clock times)."""
    monkeypatch.setenv("TZ", request.param)
    time.tzset()
    yield request.param
    monkeypatch.undo()
    time.tzset()


def test_the_training_set_through_the_spark_offline_store_equals_duckdbs(
    raw, training, events, spark, tmp_path, local_zone
):
    on_spark = repo_with(raw, DS, tmp_path, **spark_engine.feast_blocks(MASTER, SETTINGS))
    assert on_spark.config.offline_store.type == "spark"
    registered = {source.name: type(source).__name__ for source in on_spark.list_data_sources()}
    assert set(registered.values()) >= {"SparkSource"} and "FileSource" not in registered.values(), registered
    frame = store.training_frame(on_spark, events)
    assert len(frame) == len(training) > 1000
    pd.testing.assert_frame_equal(frame, training, check_exact=False, rtol=1e-9)


def test_the_entity_rows_reach_spark_as_a_file_in_the_repo_removed_afterwards(raw, events, spark, tmp_path):
    """A training chunk's rows go to Feast's Spark query as a parquet file that the workers read, not as a local
    relation whose rows travel inside every task (at 10M events that ran the driver's 4 GB heap out)."""
    on_spark = repo_with(raw, DS, tmp_path, **spark_engine.feast_blocks(MASTER, SETTINGS))
    entity_df = events[[USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP]].drop_duplicates(ignore_index=True)
    data = store.data_dir(tmp_path)
    with store._entity_rows(on_spark, entity_df) as rows:
        (written,) = data.glob("entity-rows-*.parquet")
        assert [file.removeprefix("file://") for file in rows.inputFiles()] == [str(written)]
        assert dict(rows.dtypes)[EVENT_TIMESTAMP] == "timestamp_ntz"
        read = rows.toPandas()
    wall_clock = entity_df[EVENT_TIMESTAMP].dt.tz_convert("UTC").dt.tz_localize(None)
    pd.testing.assert_series_equal(read[EVENT_TIMESTAMP].astype("datetime64[us]"), wall_clock.astype("datetime64[us]"))
    pd.testing.assert_frame_equal(read[[USER_KEY, MOVIE_KEY]], entity_df[[USER_KEY, MOVIE_KEY]])
    assert not list(data.glob("entity-rows-*")), "the entity rows' file outlived the retrieval"


def test_materialized_by_the_spark_engine_redis_holds_duckdbs_online_rows(raw, spark, tmp_path):
    start, end = last_data_day(DS), data_cutoff(DS)
    with (
        redis_repo(raw, DS, tmp_path / "duckdb") as duck,
        redis_repo(raw, DS, tmp_path / "spark", **spark_engine.feast_blocks(MASTER, SETTINGS)) as on_spark,
    ):
        assert type(on_spark._get_provider().batch_engine).__name__ == "SparkComputeEngine"
        for feature_store in (duck, on_spark):
            store.materialize(feature_store, start, end)
        rng = np.random.default_rng(0)
        users, movies = raw.users[USER_KEY].astype(str), raw.movies[MOVIE_KEY].astype(str)
        pairs = pd.concat([  # every user, every movie
            pd.DataFrame({USER_KEY: users, MOVIE_KEY: rng.choice(movies, len(users))}),
            pd.DataFrame({USER_KEY: rng.choice(users, len(movies)), MOVIE_KEY: movies}),
        ], ignore_index=True)  # fmt: skip
        online = store.online_frame(on_spark, pairs)
        assert online.drop(columns=[USER_KEY, MOVIE_KEY]).notna().all().all()
        pd.testing.assert_frame_equal(online, store.online_frame(duck, pairs), check_exact=False, rtol=1e-9)
        verdicts = [skew_report(s, sample_size=40, as_of=NOW) for s in (duck, on_spark)]
        assert verdicts[1]["ok"] and verdicts[1]["pairs"] >= 30, verdicts[1]
        assert {k: verdicts[1][k] for k in ("ok", "pairs", "mismatched_pairs")} == {
            k: verdicts[0][k] for k in ("ok", "pairs", "mismatched_pairs")
        }
