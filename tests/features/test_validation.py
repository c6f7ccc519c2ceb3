"""The Great Expectations suite: passes a good snapshot, fails each kind of bad one with a clear message."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.dates import last_data_day
from deepfm_model.spec.features import GENRES
from deepfm_model.spec.raw_data import RawData
from feature_repo import rules, validation

from .conftest import DS


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
    pattern = re.compile(rules.genres_regex(GENRES))
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


# --- Against the previous accepted snapshot: row count band, label rate, distribution drift (PSI) ----------


@pytest.fixture(scope="module")
def reference(training, tmp_path_factory) -> dict:
    path = validation.record_reference(training, tmp_path_factory.mktemp("reference") / "reference.json")
    return json.loads(path.read_text())


def test_reference_records_rows_label_rate_and_bins(reference, training):
    assert reference["rows"] == len(training)
    assert reference["label_rate"] == pytest.approx(training["label"].mean())
    assert set(reference["features"]) == set(validation.DRIFT_FEATURES)
    for stats in reference["features"].values():
        assert sum(stats["shares"]) == pytest.approx(1.0)


def test_snapshot_passes_against_its_own_reference_and_a_day_later(snapshot, reference, tmp_path):
    report = validation.validate_snapshot(snapshot, tmp_path / "docs", reference=reference)
    assert report.success, report.summary
    table = validation.psi_table(snapshot, reference)
    assert (table.to_numpy() < 1e-9).all()
    grown = pd.concat([snapshot, snapshot.tail(len(snapshot) // 20)])  # one more day: 5% more rows, same shape
    grown["event_timestamp"] = grown["event_timestamp"] + pd.to_timedelta(np.arange(len(grown)), unit="us")
    assert validation.validate_snapshot(grown, tmp_path / "docs", reference=reference).success


def test_psi_of_known_shares():
    assert validation.population_stability_index([0.5, 0.5], [0.5, 0.5]) == 0.0
    expected = (0.9 - 0.5) * np.log(0.9 / 0.5) + (0.1 - 0.5) * np.log(0.1 / 0.5)
    assert validation.population_stability_index([0.9, 0.1], [0.5, 0.5]) == pytest.approx(expected)


def _shifted(frame: pd.DataFrame) -> pd.DataFrame:
    frame["age"] = frame["age"] + 30.0  # still inside 1..120: only the drift check can see it
    return frame


def _shrunk(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.iloc[: len(frame) // 3]


def _replayed(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.concat([frame, frame, frame], ignore_index=True)


def _label_shift(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.sample(frac=0.3, random_state=0).index, "label"] = 1
    return frame


AGAINST_REFERENCE = {
    "shifted distribution": (
        _shifted,
        [r"drift: expect_column_values_to_be_between\(column='psi_age'.*max_value=0\.25\).*e\.g\. \[\d"],
    ),
    "row count fell below half": (
        _shrunk,
        [r"expect_table_row_count_to_be_between\(min_value=\d+, max_value=\d+\): observed \d+"],
    ),
    "replayed feed tripled the rows": (
        _replayed,
        [
            r"expect_table_row_count_to_be_between",
            r"expect_compound_columns_to_be_unique\(column_list=\['user_id', 'movie_id', 'event_timestamp'\]\)",
        ],
    ),
    "label rate moved": (
        _label_shift,
        [r"expect_column_mean_to_be_between\(column='label', min_value=0\.\d+, max_value=0\.\d+\): observed"],
    ),
}


@pytest.mark.parametrize("case", list(AGAINST_REFERENCE))
def test_bad_snapshot_against_reference(snapshot, reference, tmp_path, case):
    corrupt, patterns = AGAINST_REFERENCE[case]
    report = validation.validate_snapshot(corrupt(snapshot), tmp_path / "docs", reference=reference)
    assert not report.success
    for pattern in patterns:
        assert re.search(pattern, report.summary), f"{pattern!r} not in:\n{report.summary}"


def test_duplicated_events_fail_without_reference(snapshot, tmp_path):
    report = validation.validate_snapshot(pd.concat([snapshot, snapshot.head(4)]), tmp_path / "docs")
    assert re.search(
        r"expect_compound_columns_to_be_unique.*4 of \d+ values unexpected|compound_columns.*8 of", report.summary
    ), report.summary


# --- Raw sources at ingest --------------------------------------------------------------------------------

NOW = pd.Timestamp("1998-01-21 06:00", tz="UTC")  # the morning of DS: the whole synthetic window is "past"


def test_good_sources_pass(raw, tmp_path):
    report = validation.validate_sources(
        raw.events_before(pd.Timestamp("1998-01-21", tz="UTC")), DS, tmp_path / "docs", now=NOW
    )
    assert report.success, report.summary
    assert report.summary.startswith("Source validation passed")
    assert report.docs_path.is_file()


def _raw_with(raw, events=None, users=None, movies=None) -> RawData:
    base = raw.events_before(pd.Timestamp("1998-01-21", tz="UTC"))
    return RawData(
        events if events is not None else base.events.copy(),
        users if users is not None else base.users.copy(),
        movies if movies is not None else base.movies.copy(),
    )


def _empty_day(raw):
    events = raw.events_before(pd.Timestamp("1998-01-21", tz="UTC")).events
    return _raw_with(raw, events=events[events["event_timestamp"] < last_data_day(DS)].copy())


def _duplicated_events(raw):
    events = raw.events_before(pd.Timestamp("1998-01-21", tz="UTC")).events
    return _raw_with(raw, events=pd.concat([events, events.tail(3)], ignore_index=True))


def _future(raw):
    r = _raw_with(raw)
    r.events.loc[r.events.index[-2:], "event_timestamp"] = pd.Timestamp("2031-05-01", tz="UTC")
    return r


def _orphan_event(raw):
    r = _raw_with(raw)
    r.events.loc[r.events.index[0], "movie_id"] = "no-such-movie"
    return r


def _bad_rating(raw):
    r = _raw_with(raw)
    r.events.loc[r.events.index[0], "rating"] = 0
    return r


def _fractional_rating(raw):
    r = _raw_with(raw)
    r.events["rating"] = r.events["rating"].astype("float64") - 0.5
    return r


def _null_timestamp(raw):
    r = _raw_with(raw)
    r.events.loc[r.events.index[0], "event_timestamp"] = pd.NaT
    return r


def _duplicate_user(raw):
    r = _raw_with(raw)
    return _raw_with(raw, users=pd.concat([r.users, r.users.head(1)], ignore_index=True))


def _bad_profile_codes(raw):
    r = _raw_with(raw)
    r.users.loc[r.users.index[0], "gender"] = "X"
    r.movies.loc[r.movies.index[0], "genres"] = "Action|Space Opera"
    return r


def _missing_events_column(raw):
    return _raw_with(raw, events=_raw_with(raw).events.drop(columns=["rating"]))


BAD_SOURCES = {
    "empty day": (
        _empty_day,
        [r"events: expect_column_sum_to_be_between\(column='on_run_day', min_value=1(?:\.0)?\): observed 0"],
    ),
    "duplicated events": (_duplicated_events, [r"events: expect_compound_columns_to_be_unique\(.*6 of \d+ values"]),
    "timestamps in the future": (
        _future,
        [r"events: expect_column_values_to_be_between\(column='event_timestamp'.*2031-05-01"],
    ),
    "event of an unknown movie": (
        _orphan_event,
        [r"events: expect_column_values_to_be_in_set\(column='movie_id'\).*'no-such-movie'"],
    ),
    "out-of-range rating": (
        _bad_rating,
        [r"events: expect_column_values_to_be_between\(column='rating'.*e\.g\. \[0\]"],
    ),
    "fractional ratings": (_fractional_rating, [r"events: expect_column_values_to_be_in_type_list\(column='rating'"]),
    "null timestamp": (
        _null_timestamp,
        [r"events: expect_column_values_to_not_be_null\(column='event_timestamp'\): 1 of"],
    ),
    "duplicated user profile": (_duplicate_user, [r"users: expect_column_values_to_be_unique\(column='user_id'\)"]),
    "unknown profile codes": (
        _bad_profile_codes,
        [
            r"users: expect_column_values_to_be_in_set\(column='gender'\).*'X'",
            r"movies: expect_column_values_to_match_regex\(column='genres'\).*Space Opera",
        ],
    ),
    "missing events column": (_missing_events_column, [r"events: expect_column_to_exist\(column='rating'\)"]),
}


@pytest.mark.parametrize("case", list(BAD_SOURCES))
def test_bad_sources_fail_naming_the_expectation(raw, tmp_path, case):
    corrupt, patterns = BAD_SOURCES[case]
    report = validation.validate_sources(corrupt(raw), DS, tmp_path / "docs", now=NOW)
    assert not report.success
    assert report.summary.startswith("Source validation FAILED")
    for pattern in patterns:
        assert re.search(pattern, report.summary), f"{pattern!r} not in:\n{report.summary}"
