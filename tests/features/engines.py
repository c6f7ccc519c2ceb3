"""What the tests of the two feature engines share: one night's feature work on an engine, and frames compared
with counts exact and rates within `TOLERANCE`."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from deepfm_model.spec.features import USER_FRESH_VIEW
from deepfm_model.synthetic import write_folder
from feature_repo import daily_stats, ingest, raw_source, spark_engine
from feature_repo.raw_source import RawSource

NOW = pd.Timestamp("2026-01-01", tz="UTC")
VIEWS = (*(spec.view for spec in daily_stats.STATS_VIEWS), USER_FRESH_VIEW)
TOLERANCE = 1e-9  # rates; counts are compared exactly


def write_source(folder: Path) -> Path:
    """The generated source both engines' tests read: 3,000 events of 80 users on 50 movies over six days."""
    write_folder(folder, n_events=3000, n_users=80, n_movies=50, days=6, seed=7)
    return folder


def night(engine: str, source: Path, ds: str, data_dir: Path, spark=None) -> dict[str, int]:
    """One night's checks and sources on `engine` (`spark`: on the session `spark`); the row counts the checks return."""
    connect = raw_source.connect if engine == "duckdb" else lambda raw: spark_engine.connect(raw, spark)
    with connect(RawSource.from_folder(source)) as con:
        counts = raw_source.check(con, now=NOW)
        ingest.write_sources(con, ds, data_dir)
    return counts


def assert_frames_equal(actual: pd.DataFrame, expected: pd.DataFrame, what: str) -> None:
    """Same columns, types and rows; floating columns within `TOLERANCE`, every other column exactly."""
    assert list(actual.columns) == list(expected.columns), what
    assert dict(actual.dtypes) == dict(expected.dtypes), what
    assert len(actual) == len(expected), what
    for column in expected.columns:
        left, right = actual[column].to_numpy(), expected[column].to_numpy()
        if expected[column].dtype == np.float64 and not column.endswith("_count"):
            np.testing.assert_allclose(left, right, rtol=0, atol=TOLERANCE, err_msg=f"{what}.{column}")
        elif len(right) and isinstance(right[0], np.ndarray):  # the genre stats: lists of counts
            assert [list(v) for v in left] == [list(v) for v in right], f"{what}.{column}"
        else:
            assert pd.Series(left).equals(pd.Series(right)), f"{what}.{column}"


def sorted_file(path: Path) -> pd.DataFrame:
    table = pd.read_parquet(path)
    keys = [c for c in (table.columns[0], "day", "event_timestamp") if c in table.columns]
    return table.sort_values(keys, kind="stable").reset_index(drop=True)


def assert_same_sources(actual: Path, expected: Path) -> None:
    """Two data folders hold the same sources: each view, and every parquet file (the day files, the daily sums and
    totals beneath the stats) alone."""
    for view in VIEWS:
        assert_frames_equal(ingest.read_source(actual, view), ingest.read_source(expected, view), view)
    files = sorted(p.relative_to(expected) for p in expected.rglob("*.parquet"))
    assert files == sorted(p.relative_to(actual) for p in actual.rglob("*.parquet"))
    assert len(files) > 4 * len(VIEWS)  # a file per day of each view and of each view's daily sums
    for file in files:
        assert_frames_equal(sorted_file(actual / file), sorted_file(expected / file), str(file))
