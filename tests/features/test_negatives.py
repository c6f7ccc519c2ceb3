"""Sampled "not picked" rows: never a movie the user had rated at or before the event, uniform, seeded."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from deepfm_model.spec.features import EVENT_TIMESTAMP, LABEL, MOVIE_KEY, PICKED, RATING, USER_KEY
from feature_repo.negatives import DRAW, EVENT_POSITION, draw_unrated, sample_unrated, write_sampled


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    return pd.DataFrame(
        {
            USER_KEY: [u for u, _, _ in rows],
            MOVIE_KEY: [m for _, m, _ in rows],
            EVENT_TIMESTAMP: pd.to_datetime([t for _, _, t in rows], utc=True),
        }
    )


def test_never_a_movie_rated_at_or_before_the_event_and_later_ones_allowed():
    catalogue = np.array(["a", "b", "c", "d"])
    # u1 rates a, then b, then c: at the first event only b, c, d may be drawn; at the last only d.
    events = _events([("u1", "a", "1998-01-01"), ("u1", "b", "1998-01-02"), ("u1", "c", "1998-01-03")])
    rows, record = sample_unrated(events, catalogue, per_event=200, seed=1)
    allowed = {0: {"b", "c", "d"}, 1: {"c", "d"}, 2: {"d"}}
    for position, group in rows.groupby(EVENT_POSITION):
        assert set(group[MOVIE_KEY]) == allowed[position]  # every allowed movie drawn, no other
        assert (group[EVENT_TIMESTAMP] == events[EVENT_TIMESTAMP].iloc[position]).all()
    assert (rows[[RATING, LABEL, PICKED]] == 0).all().all()
    assert record.rows == len(rows) == 600 and record.dropped == 0 and record.per_event == 200


def test_uniform_over_the_unrated_catalogue_and_seeded():
    catalogue = np.array([str(i) for i in range(10)])
    events = _events([("u", "0", "1998-01-01")])
    rows, _ = sample_unrated(events, catalogue, per_event=9000, seed=0)
    counts = rows[MOVIE_KEY].value_counts()
    assert "0" not in counts.index and len(counts) == 9
    assert counts.min() > 850 and counts.max() < 1150  # 1000 each expected; 5 sigma is about 150
    again, _ = sample_unrated(events, catalogue, per_event=9000, seed=0)
    other, _ = sample_unrated(events, catalogue, per_event=9000, seed=1)
    pd.testing.assert_frame_equal(rows, again)
    assert not rows[MOVIE_KEY].equals(other[MOVIE_KEY])


def test_a_cap_gives_exactly_max_rows_draws_spread_evenly_and_records_the_rate():
    catalogue = np.array([str(i) for i in range(1000)])
    events = _events([(f"u{i % 40}", str(i % 50), f"1998-01-{1 + i % 28:02d}") for i in range(400)])
    full, _ = sample_unrated(events, catalogue, per_event=4, seed=3)
    capped, record = sample_unrated(events, catalogue, per_event=4, seed=3, max_rows=600)
    assert len(capped) == record.rows == 600 and record.rate == 1.5 and record.max_rows == 600
    per_event = capped[EVENT_POSITION].value_counts().reindex(range(400), fill_value=0)
    assert set(per_event) == {1, 2}  # the floor or the ceiling of 600 / 400
    assert per_event[:200].sum() == per_event[200:].sum() == 300  # every stretch of the history its share
    assert capped.merge(full, how="left", indicator=True)["_merge"].eq("both").all()  # the same draws, fewer
    again, _ = sample_unrated(events, catalogue, per_event=4, seed=3, max_rows=600)
    pd.testing.assert_frame_equal(capped, again)
    uncapped, record = sample_unrated(events, catalogue, per_event=4, seed=3, max_rows=1600)  # does not bind
    pd.testing.assert_frame_equal(uncapped, full)
    assert record.rate == 4.0


def test_any_grouping_of_whole_users_draws_the_same_rows():
    """What lets Spark sample per bucket of users: each draw depends on the seed and its event's position alone."""
    rng = np.random.default_rng(0)
    catalogue = np.array([str(i) for i in range(30)])
    events = _events([(f"u{rng.integers(12)}", str(rng.integers(30)), f"1998-01-{1 + i // 40:02d}")
                      for i in range(600)])  # fmt: skip
    events[EVENT_POSITION] = np.arange(len(events))
    whole = draw_unrated(events, catalogue, 3, 5, len(events), max_rows=1000)
    for groups in (2, 5):
        bucket = events[USER_KEY].map(lambda user, groups=groups: int(user[1:]) % groups)
        parts = [draw_unrated(events[bucket == b], catalogue, 3, 5, len(events), max_rows=1000) for b in range(groups)]
        pieced = pd.concat(parts).sort_values([EVENT_POSITION, DRAW]).reset_index(drop=True)
        pd.testing.assert_frame_equal(pieced, whole)
    assert len(whole) == 1000 and 0 < whole[MOVIE_KEY].isna().sum() < 100  # the dropped draws compared too


def test_a_user_who_rated_everything_gets_no_rows_and_the_drop_is_counted():
    catalogue = np.array(["a", "b"])
    events = _events([("u", "a", "1998-01-01"), ("u", "b", "1998-01-01")])
    rows, record = sample_unrated(events, catalogue, per_event=3, seed=0)
    assert rows.empty and record.dropped == 6 and record.rows == 0


def test_bad_arguments_are_refused(tmp_path):
    events = _events([("u", "a", "1998-01-01")])
    with pytest.raises(ValueError, match="per_event"):
        sample_unrated(events, np.array(["a", "b"]), per_event=-1, seed=0)
    with pytest.raises(ValueError, match="catalogue"):
        sample_unrated(events, np.array([], dtype=str), per_event=1, seed=0)
    events.to_parquet(tmp_path / "events.parquet")
    record = write_sampled(tmp_path / "events.parquet", np.array(["a", "b"]), 2, 0, tmp_path / "sampled.parquet")
    written = pd.read_parquet(tmp_path / "sampled.parquet")
    assert record.rows == len(written) == 2 and set(written[MOVIE_KEY]) == {"b"}
