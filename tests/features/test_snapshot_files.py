"""The training snapshot on disk: built in chunks equal to one whole build, and validated exactly in SQL (with the
column checks and drift on a sample) when it is larger than the in-memory limit."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from deepfm_model.layout import SPLITS
from feature_repo import snapshot_validation, store
from feature_repo.negatives import write_sampled
from feature_repo.validation import validate_snapshot

SAMPLE = 1500  # rows validated in memory here: the synthetic snapshot (~4,000 rows) takes the large path


def test_chunked_training_set_equals_one_whole_build(feature_store, events, training, tmp_path):
    events_path = tmp_path / "events.parquet"
    events.sort_values(["event_timestamp", "user_id", "movie_id"]).to_parquet(events_path, index=False)
    paths = tuple(tmp_path / f"{name}.parquet" for name in SPLITS)
    written = store.write_training_set(feature_store, events_path, paths, chunk_rows=700)
    for path, expected, rows in zip(paths, store.split_by_time(training), written, strict=True):
        pd.testing.assert_frame_equal(pd.read_parquet(path), expected, check_exact=True)
        assert rows == len(expected)


def files(frame: pd.DataFrame, folder: Path) -> list[Path]:
    """`frame` as three split files, as the snapshot is stored."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = [folder / f"{name}.parquet" for name in SPLITS]
    for path, part in zip(paths, store.split_by_time(frame), strict=True):
        part.to_parquet(path, index=False)
    return paths


def test_a_small_snapshot_is_validated_whole_as_before(snapshot, tmp_path):
    report = snapshot_validation.validate_snapshot_files(files(snapshot, tmp_path / "s"), tmp_path / "docs")
    expected = validate_snapshot(snapshot, tmp_path / "docs2")
    assert (report.success, report.evaluated, report.failures) == (expected.success, expected.evaluated, ())


def test_a_large_good_snapshot_passes_and_records_exact_totals(snapshot, tmp_path):
    paths = files(snapshot, tmp_path / "s")
    report = snapshot_validation.validate_snapshot_files(paths, tmp_path / "docs", sample_rows=SAMPLE)
    assert report.success, report.summary
    assert f"({len(snapshot)} rows)" in report.summary
    reference = snapshot_validation.record_reference_files(paths, tmp_path / "ref.json", sample_rows=SAMPLE)
    stats = json.loads(reference.read_text())
    assert stats["rows"] == len(snapshot)
    assert stats["label_rate"] == pytest.approx(snapshot["label"].mean())
    again = snapshot_validation.validate_snapshot_files(
        paths, tmp_path / "docs", reference=reference, sample_rows=SAMPLE
    )
    assert again.success, again.summary


def _one_null_key(frame: pd.DataFrame) -> pd.DataFrame:
    frame["movie_id"] = frame["movie_id"].astype(object)
    frame.loc[frame.index[-1], "movie_id"] = None  # one row: a sample of 1,500 would likely miss it
    return frame


def _one_out_of_range(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[-2], "user_pos_rate"] = 1.5
    return frame


def _one_unknown_genre(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[frame.index[-3], "genres"] = "Action|Space Opera"
    return frame


def _sampled_like(frame: pd.DataFrame, rows: int, **values) -> pd.DataFrame:
    """`frame` with `rows` of its last events repeated as sampled rows (picked 0) set to `values`."""
    sampled = frame.tail(rows).assign(picked=0, rating=0, label=0)
    return pd.concat([frame, sampled.assign(**values)], ignore_index=True)


def _sampled_rated_movie(frame: pd.DataFrame) -> pd.DataFrame:
    """Two sampled rows naming a movie the user rated at that very instant: the sampling promises none."""
    return _sampled_like(frame, 2)


def _sampled_with_a_rating(frame: pd.DataFrame) -> pd.DataFrame:
    """A sampled row (of a movie the user never rated) that carries a rating: sampled rows have none."""
    return _sampled_like(frame, 1, movie_id="never-rated", rating=4)


LARGE_BAD = {
    "null key anywhere": (_one_null_key, r"exact: expect_column_values_to_be_between\(column='null_movie_id', "
                          r"min_value=0\.0, max_value=0\.0\): 1 of 1 values unexpected, e\.g\. \[1\.0\]"),
    "value out of range anywhere": (_one_out_of_range, r"exact: .*column='out_of_range_user_pos_rate'.*e\.g\. \[1\.0\]"),
    "unknown genre anywhere": (_one_unknown_genre, r"exact: .*column='unknown_genres'.*e\.g\. \[1\.0\]"),
    "repeated events": (lambda f: pd.concat([f, f.tail(3)]), r"exact: .*column='repeated_events'.*e\.g\. \[6\.0\]"),
    "collapsed label rate": (lambda f: f.assign(label=0), r"exact: .*column='label_rate', min_value=0\.2.*e\.g\. \[0\.0\]"),
    "missing column": (lambda f: f.drop(columns=["age"]), r"expect_column_to_exist\(column='age'\)"),
    "sampled movie rated before": (_sampled_rated_movie, r"exact: .*column='sampled_rated_before'.*e\.g\. \[2\.0\]"),
    "sampled row with a rating": (_sampled_with_a_rating, r"exact: .*column='unknown_rating_where_picked_0'.*e\.g\. \[1\.0\]"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(LARGE_BAD))
def test_a_large_bad_snapshot_fails_on_the_exact_figures(snapshot, tmp_path, case):
    corrupt, pattern = LARGE_BAD[case]
    paths = files(corrupt(snapshot), tmp_path / "s")
    report = snapshot_validation.validate_snapshot_files(paths, tmp_path / "docs", sample_rows=SAMPLE)
    assert not report.success
    assert re.search(pattern, report.summary), f"{pattern!r} not in:\n{report.summary}"


def test_a_large_snapshot_far_below_the_reference_fails_the_row_band(snapshot, tmp_path):
    reference = snapshot_validation.record_reference_files(files(snapshot, tmp_path / "a"), tmp_path / "ref.json")
    shrunk = files(snapshot.iloc[: len(snapshot) // 3], tmp_path / "b")
    report = snapshot_validation.validate_snapshot_files(shrunk, tmp_path / "docs", reference=reference,
                                                         sample_rows=SAMPLE // 2)  # fmt: skip
    assert re.search(r"exact: expect_column_values_to_be_between\(column='rows', min_value=\d+", report.summary)


def test_sampled_rows_go_to_their_events_split_in_any_chunking(feature_store, events, tmp_path, monkeypatch):
    events_path = tmp_path / "events.parquet"
    events.sort_values(["event_timestamp", "user_id", "movie_id"]).to_parquet(events_path, index=False)
    catalogue = np.array(sorted(events["movie_id"].astype(str).unique()))
    record = write_sampled(events_path, catalogue, 2, 0, tmp_path / "sampled.parquet")
    outputs, retrieved = {}, []
    retrieve = store.training_frame
    monkeypatch.setattr(store, "training_frame", lambda *args: retrieved.append(len(args[1])) or retrieve(*args))
    for chunk_rows in (700, 1_000_000):
        retrieved.clear()
        paths = tuple(tmp_path / f"{chunk_rows}-{name}.parquet" for name in SPLITS)
        written = store.write_training_set(feature_store, events_path, paths, chunk_rows=chunk_rows,
                                           sampled_path=tmp_path / "sampled.parquet")  # fmt: skip
        outputs[chunk_rows] = [pd.read_parquet(path) for path in paths]
        assert sum(written) == len(events) + record.rows
        # A chunk holds about `chunk_rows` entity rows, its events' sampled rows counted (memory is per entity row).
        assert max(retrieved) <= chunk_rows * 1.1 and (chunk_rows > sum(written) or len(retrieved) > 1)
    for small, whole in zip(outputs[700], outputs[1_000_000], strict=True):
        key = ["event_timestamp", "user_id", "movie_id", "picked"]
        pd.testing.assert_frame_equal(small.sort_values(key, kind="stable").reset_index(drop=True),
                                      whole.sort_values(key, kind="stable").reset_index(drop=True))  # fmt: skip
    splits = outputs[700]
    rated = [split[split["picked"] == 1] for split in splits]
    assert [len(r) for r in rated] == list(store.split_sizes(len(events)))
    for earlier, later in zip(
        splits, splits[1:], strict=False
    ):  # a sampled row keeps its event's instant, so splits stay ordered
        assert earlier["event_timestamp"].max() <= later["event_timestamp"].min()
    sampled = pd.concat(splits)
    sampled = sampled[sampled["picked"] == 0]
    assert len(sampled) == record.rows and (sampled[["rating", "label"]] == 0).all().all()
    assert sampled["movie_rating_count"].notna().all()  # every movie has a stats row on every day with events
