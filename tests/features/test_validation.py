"""The Great Expectations suite: passes a good snapshot, fails each kind of bad one with a clear message."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from deepfm_model.features import GENRES
from feature_repo import validation


def test_good_snapshot_passes_and_writes_data_docs(snapshot, tmp_path):
    report = validation.validate_snapshot(snapshot, tmp_path / "docs")
    assert report.success, report.summary
    assert report.failures == ()
    assert report.docs_path.is_file()
    assert report.docs_path.is_relative_to(tmp_path / "docs")
    assert report.docs_path.suffix == ".html"
    assert report.summary.startswith("Snapshot validation passed")


def _null_key(frame: pd.DataFrame) -> pd.DataFrame:
    frame["user_id"] = frame["user_id"].astype(object)
    frame.loc[frame.index[:3], "user_id"] = None
    return frame


def _out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[0], "age"] = 430.0
    return frame


def _unknown_category(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[0], "occupation"] = "astronaut"
    frame.loc[frame.index[1], "genres"] = "Action|Space Opera"
    return frame


def _wrong_type(frame: pd.DataFrame) -> pd.DataFrame:
    frame["release_year"] = frame["release_year"].astype(int).astype(str)
    return frame


def _collapsed_label(frame: pd.DataFrame) -> pd.DataFrame:
    frame["label"] = 0
    return frame


BAD_SNAPSHOTS = {
    "null key": (_null_key, [r"expect_column_values_to_not_be_null\(column='user_id'\): 3 of \d+ values"]),
    "out of range": (_out_of_range, [r"expect_column_values_to_be_between\(column='age'.*e\.g\. \[430\.0\]"]),
    "unknown category": (
        _unknown_category,
        [
            r"expect_column_values_to_be_in_set\(column='occupation'\).*'astronaut'",
            r"expect_column_values_to_match_regex\(column='genres'\).*'Action\|Space Opera'",
        ],
    ),
    "missing column": (lambda f: f.drop(columns=["genres"]), [r"expect_column_to_exist\(column='genres'\)"]),
    "wrong type": (_wrong_type, [r"expect_column_values_to_be_of_type\(column='release_year', type_='float64'\)"]),
    "collapsed label rate": (
        _collapsed_label,
        [r"expect_column_mean_to_be_between\(column='label', min_value=0\.2, max_value=0\.9\): observed 0"],
    ),
    "empty frame": (lambda f: f.iloc[:0], [r"expect_table_row_count_to_be_between\(min_value=1000.*observed 0"]),
}


@pytest.mark.parametrize("case", list(BAD_SNAPSHOTS))
def test_bad_snapshot_fails_naming_the_expectation(snapshot, tmp_path, case):
    corrupt, patterns = BAD_SNAPSHOTS[case]
    report = validation.validate_snapshot(corrupt(snapshot), tmp_path / "docs")
    assert not report.success
    assert report.summary.startswith("Snapshot validation FAILED")
    for pattern in patterns:
        assert re.search(pattern, report.summary), f"{pattern!r} not in:\n{report.summary}"
    assert report.docs_path.is_file()


def test_genres_regex_accepts_every_genre_and_no_value():
    pattern = re.compile(validation.genres_regex(GENRES))
    assert pattern.match("|".join(GENRES))
    assert pattern.match("Children's|Film-Noir|Sci-Fi")
    assert pattern.match("")
    for bad in ("Action|", "|Action", "action", "Action||Drama", "Sci Fi"):
        assert not pattern.match(bad), bad


def test_command_line_exit_status(snapshot, tmp_path, capsys):
    good, bad = tmp_path / "good.parquet", tmp_path / "bad.parquet"
    snapshot.to_parquet(good)
    snapshot.assign(age=np.where(snapshot.index == 0, -4.0, snapshot["age"])).to_parquet(bad)
    assert validation.main([str(good), "--docs-dir", str(tmp_path / "docs")]) == 0
    assert validation.main([str(bad), "--docs-dir", str(tmp_path / "docs")]) == 1
    assert "expect_column_values_to_be_between(column='age'" in capsys.readouterr().out
