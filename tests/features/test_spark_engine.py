"""The nightly feature work on Spark equals DuckDB's: two nights (the second incremental) over one generated source
on both engines, every file compared; the raw checks count the same bad rows; the DuckDB SQL renders for Spark."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.features import USER_KEY
from feature_repo import daily_stats, ingest, raw_source, spark_engine
from feature_repo.raw_source import RawSource, RawSourceError
from tests.features.engines import NOW, VIEWS, assert_frames_equal, assert_same_sources, night, write_source

NIGHTS = ("1998-01-05", "1998-01-06")  # the second night adds one day of events


@pytest.fixture(scope="module")
def spark() -> Iterator:
    session = spark_engine.session("local[2]", {"spark.sql.shuffle.partitions": "2"})
    yield session
    session.stop()


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_source(tmp_path_factory.mktemp("source"))


@pytest.fixture(scope="module")
def homes(source: Path, spark, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Both engines' data folders after the two nights, the check counts, and the Spark home's files before night 2."""
    result = {}
    for engine in ("duckdb", "spark"):
        data_dir = tmp_path_factory.mktemp(engine)
        counts = night(engine, source, NIGHTS[0], data_dir, spark)
        before = {path: path.stat().st_mtime_ns for path in data_dir.rglob("*.parquet")}
        assert counts == night(engine, source, NIGHTS[1], data_dir, spark)
        result[engine] = (data_dir, counts, before)
    return result


def test_two_nights_on_spark_write_the_sources_duckdb_writes(homes):
    (duck, duck_counts, _), (spark, spark_counts, _) = homes["duckdb"], homes["spark"]
    assert spark_counts == duck_counts == {"events": 3000, "users": 80, "movies": 50}
    assert_same_sources(spark, duck)


def test_the_second_night_on_spark_rewrites_only_the_new_day(homes):
    data_dir, _, before = homes["spark"]
    new_day = pd.Timestamp(NIGHTS[1]) - pd.Timedelta(days=1)
    kept = [p for p in before if p.stem < new_day.strftime("%Y-%m-%d") and p.stem[:2] == "19"]
    assert len(kept) > 10
    assert all(p.stat().st_mtime_ns == before[p] for p in kept)
    assert (data_dir / "user_stats" / f"{NIGHTS[1]}.parquet").is_file()
    manifest = (data_dir / daily_stats.AGGREGATES_DIR / daily_stats.MANIFEST_FILE).read_text()
    assert '"engine": "spark ' in manifest


def test_both_engines_refuse_the_same_bad_rows(source, spark, tmp_path):
    events = pd.read_parquet(source / "events.parquet")
    events.loc[events.index[10], "rating"] = 9
    events.loc[events.index[20], USER_KEY] = "no-such-user"
    bad = tmp_path / "bad"
    bad.mkdir()
    for table in ("users", "movies"):
        (bad / f"{table}.parquet").write_bytes((source / f"{table}.parquet").read_bytes())
    events.to_parquet(bad / "events.parquet", index=False)
    problems = {}
    for engine, connect in (("duckdb", raw_source.connect), ("spark", lambda raw: spark_engine.connect(raw, spark))):
        with connect(RawSource.from_folder(bad)) as con, pytest.raises(RawSourceError) as failure:
            raw_source.check(con, now=NOW)
        problems[engine] = failure.value.problems
    assert problems["spark"] == problems["duckdb"]
    assert len(problems["duckdb"]) == 2
    assert problems["duckdb"][0].startswith("events.rating: 1 of 3000 rows outside 1..5")
    assert "events.user_id: 1 of 3000 rows not a user_id of `users`" in problems["duckdb"][1]


def test_duckdb_sql_renders_for_spark():
    rendered = spark_engine.spark_sql(
        """SELECT "it's", strftime(day, '%Y-%m-%d') FROM t WHERE regexp_full_match("g", 'a\\|b') """
        """AND x > TIMESTAMPTZ '1998-01-01T00:00:00+00:00' AND y = 'O''Neil' AND z < 2.5 USING SAMPLE reservoir(10 ROWS) REPEATABLE (7)"""
    )
    assert rendered == (
        "SELECT `it's`, date_format(day, 'yyyy-MM-dd') FROM t WHERE (`g` RLIKE '^(?:a\\\\|b)$') "
        "AND x > TIMESTAMP '1998-01-01T00:00:00+00:00' AND y = 'O\\'Neil' AND z < 2.5D ORDER BY rand(7) LIMIT 10"
    )


def test_the_great_expectations_sample_on_spark_holds_the_last_day_and_a_repeatable_sample(source, spark):
    """`raw_source.validation_sample` through Spark: the run's last day whole and `rows` earlier events, drawn with
    the seed (the same rows twice), typed as DuckDB's sample is."""
    cutoff, day, rows = pd.Timestamp("1998-01-07", tz="UTC"), pd.Timestamp("1998-01-06", tz="UTC"), 600
    samples = {}
    for engine, connect in (("duckdb", raw_source.connect), ("spark", lambda raw: spark_engine.connect(raw, spark))):
        with connect(RawSource.from_folder(source)) as con:
            raw_source.check(con, now=NOW)
            samples[engine] = [raw_source.validation_sample(con, cutoff, day, rows).events for _ in range(2)]
    (duck, _), (first, again) = samples["duckdb"], samples["spark"]
    assert dict(first.dtypes) == dict(duck.dtypes)
    assert first.equals(again)
    events = pd.read_parquet(source / "events.parquet")
    stamps = pd.to_datetime(events["event_timestamp"], utc=True)
    last_day = events[(stamps >= day) & (stamps < cutoff)]
    assert 0 < len(last_day) < rows < (stamps < day).sum()
    for sample in (first, duck):
        assert (sample["event_timestamp"] >= day).sum() == len(last_day)
        assert (sample["event_timestamp"] < day).sum() == rows
        assert sample.merge(events, how="left", indicator=True)["_merge"].eq("both").all()


def test_the_sampled_rows_on_spark_are_duckdbs_drawn_per_bucket_of_users(source, spark, tmp_path):
    """`ingest.write_sampled` through Spark (`negatives.draw_unrated` on each bucket of users, in tasks) writes the
    file DuckDB's connection writes (every event at once, in this process): the same rows in the same order, and
    the same record, with a cap that binds."""
    outputs = {}
    for engine, connect in (("duckdb", raw_source.connect), ("spark", lambda raw: spark_engine.connect(raw, spark))):
        events, sampled = tmp_path / f"{engine}-events.parquet", tmp_path / f"{engine}-sampled.parquet"
        with connect(RawSource.from_folder(source)) as con:
            raw_source.check(con, now=NOW)
            ingest.write_labelled_events(con, NIGHTS[0], events)
            record = ingest.write_sampled(con, events, 3, 11, sampled, max_rows=5000)
        outputs[engine] = (pd.read_parquet(sampled), record)
    (duck, duck_record), (on_spark, spark_record) = outputs["duckdb"], outputs["spark"]
    assert spark_record == duck_record
    assert duck_record.rows + duck_record.dropped == 5000 and duck_record.rows > 4900
    assert_frames_equal(on_spark, duck, "sampled")
    assert on_spark["event_position"].is_monotonic_increasing


def stage_config(source: Path, home: Path, engine: str):
    """The pipeline's configuration of a home over the parquet `source`, features on `engine`."""
    from dags.pipeline.config import PipelineConfig
    from feature_repo import store

    store.write_config(home / "repo")
    return PipelineConfig.from_env({
        "DEEPFM_SOURCE": "parquet", "DEEPFM_SOURCE_DIR": str(source), "DEEPFM_FEATURE_REPO": str(home / "repo"),
        "DEEPFM_ARTIFACTS": str(home / "artifacts"), "DEEPFM_FEATURE_ENGINE": engine,
    })  # fmt: skip


def test_the_feature_stages_on_spark_give_duckdbs_sources_training_set_and_skew_verdict(homes, source, spark, tmp_path):
    """`DEEPFM_FEATURE_ENGINE=spark` reaches every feature stage of the night: `ingest` (two nights) writes the
    DuckDB home's sources; Feast's Spark offline store and Spark engine then give the same skew verdict and the
    same training set rows and values as the DuckDB home's stages."""
    from dags.pipeline import stages
    from deepfm_model.layout import SPLITS
    from feature_repo import store

    outputs = {}
    for engine in ("duckdb", "spark"):
        config = stage_config(source, tmp_path / engine, engine)
        for ds in NIGHTS if engine == "spark" else NIGHTS[1:]:
            stages.ingest(config, ds)
        feature_store = config.feature_store()
        assert feature_store.config.offline_store.type == engine
        assert feature_store.config.batch_engine.type == {"spark": "spark.engine", "duckdb": "local"}[engine]
        stages.update_feature_store(config, NIGHTS[1])
        skew = stages.check_skew(config, NIGHTS[1])
        stages.build_training_set(config, NIGHTS[1])
        splits = {name: pd.read_parquet(config.run_dir(NIGHTS[1]).split(name)) for name in SPLITS}
        outputs[engine] = (store.data_dir(config.feature_repo), skew, splits)
    data_dir = outputs["spark"][0]
    manifest = (data_dir / daily_stats.AGGREGATES_DIR / daily_stats.MANIFEST_FILE).read_text()
    assert '"engine": "spark ' in manifest
    for view in VIEWS:
        assert_frames_equal(ingest.read_source(data_dir, view), ingest.read_source(homes["duckdb"][0], view), view)
    assert outputs["spark"][1] == outputs["duckdb"][1] and outputs["spark"][1]["ok"], outputs
    for name in SPLITS:
        spark_split, duck_split = outputs["spark"][2][name], outputs["duckdb"][2][name]
        assert len(spark_split) > 0
        pd.testing.assert_frame_equal(spark_split, duck_split, check_exact=False, rtol=1e-9)


def test_great_expectations_imports_beside_pyspark_in_a_process_without_a_main_file():
    """With pyspark installed, GX imports Spark Connect, whose dependency check exits such a process (`python -c`,
    a pytest-xdist worker) with status 0 unless its requirements (grpcio-status) are installed."""
    import subprocess
    import sys

    code = "import great_expectations; print('imported')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.stdout.strip() == "imported", result.stderr[-2000:]


def test_spark_settings_from_the_environment_reach_the_session(spark, source):
    """`DEEPFM_SPARK_CONF` is passed through to the session the ingest stage computes on."""
    from dags.pipeline.config import PipelineConfig
    from dags.pipeline.features import feature_connection

    config = PipelineConfig.from_env({"DEEPFM_FEATURE_ENGINE": "spark",
                                      "DEEPFM_SPARK_CONF": '{"spark.sql.shuffle.partitions": "3"}'})  # fmt: skip
    raw = RawSource.from_folder(source)
    try:
        with feature_connection(config, raw) as features:
            assert isinstance(features, spark_engine.SparkConnection)
            assert features.spark.conf.get("spark.sql.shuffle.partitions") == "3"
    finally:
        spark.conf.set("spark.sql.shuffle.partitions", "2")


def test_the_driver_gets_its_heap_and_exits_when_it_runs_out(spark):
    """`DEFAULT_CONF` reaches the driver's JVM: a 1M-row training chunk ran the 1 GB default heap out, and a heap run
    out left the stage waiting on its py4j call for ten minutes until stopped."""
    jvm = spark.sparkContext._jvm
    arguments = list(jvm.java.lang.management.ManagementFactory.getRuntimeMXBean().getInputArguments())
    assert "-XX:+ExitOnOutOfMemoryError" in arguments, arguments
    assert jvm.java.lang.Runtime.getRuntime().maxMemory() > 3.5 * 2**30  # `spark.driver.memory`: 4g
