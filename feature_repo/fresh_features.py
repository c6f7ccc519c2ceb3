"""Fresh per-user features: the state of a user after each instant of their rating events, folded event by event.

One function, `fold`, turns a user's state and their next events into the rows of the `user_fresh` view; the
nightly log (`update`), the replayer and the live push (`feature_repo.stream`) all call it, so a row pushed
online as an event happens equals the row the offline log holds for it.

Rows are stamped so that Feast's point-in-time join (feature row time <= event time) never leaks:
- the row after the events of user u at instant t is stamped t + 1 µs, so an event at t sees only the rows of
  instants strictly before t; events at the same instant (MovieLens has many in one second) never see each
  other, and no event sees itself or a later one;
- several events of u at one instant are folded together into one row (the replay and the nightly log); a live
  push of another event at an instant already folded gets the next free microsecond (Feast's online stores keep
  one row per key, and a row stamped no later than the stored one is not newer). The values are the same.
- every known user has a seed row at `ingest.PROFILE_TIMESTAMP` (no ratings yet), so an event without history
  reads "no history" rather than a null, offline and online alike; an unknown user reads nulls (cold start).

The view's TTL is one day, as the stats views' (`feature_views.FRESH_TTL`): Feast's point-in-time join pairs each
event with every earlier row of its user within the TTL before it keeps the latest, so an unbounded TTL made the
training set's join grow with each user's whole history. So that the row an event needs is always less than a day
old, the log repeats rows, with the same values, restamped:
- a carry row at 00:00 UTC of each day a user has events: their state before the day;
- a "now" row per user at the cutoff of the last update (`data_cutoff(ds)`): their state then, which the skew
  check and the next day's events read. Online, the pushed rows are the real ones (`latest_state`).

The log lives beside the other sources, as the push source's batch source reads it (`sources.py`):

    data/user_fresh/seed.parquet              one row per user of `users`, "no history"
    data/user_fresh/<YYYY-MM-DD>.parquet      the carry rows of that day and the rows of its events
    data/user_fresh/now-<YYYY-MM-DD>.parquet  the now rows, stamped 00:00 UTC of that day (the cutoff)
    data/user_fresh/live-<id>.parquet         rows pushed live (`stream push`); the next night's fold replaces them
    data/aggregates/user_fresh.json           the days folded and their fingerprints (`daily_stats`' manifest)

A night folds only the days whose events changed since the last (`daily_stats` fingerprints them): for a nightly
feed, the new day, onto the state of the day before (the last row per user of the earlier files).
"""

from __future__ import annotations

import json
import logging
import tempfile
import uuid
from collections.abc import Callable
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from deepfm_model.spec.dates import to_utc
from deepfm_model.spec.features import (
    EVENT_TIMESTAMP,
    GENRES,
    MOVIE_KEY,
    MULTI_VALUE_SEPARATOR,
    POSITIVE_RATING,
    RATING,
    RECENT_EVENTS,
    RECENT_GENRES,
    USER_FRESH_STATE_COLUMNS,
    USER_FRESH_VIEW,
    USER_KEY,
    view_features,
)
from deepfm_model.spec.files import staged_path, write_json
from deepfm_model.spec.raw_data import EVENT_COLUMNS
from feature_repo import daily_stats, raw_source, sql
from feature_repo.daily_stats import AGGREGATES_DIR, PRIOR_MEAN_RATING, PRIOR_POS_RATE, PSEUDO_COUNT
from feature_repo.transformations import genre_indicators

logger = logging.getLogger(__name__)

SEED_FILE = "seed.parquet"
LIVE_PREFIX = "live-"
NOW_PREFIX = "now-"
FOLD_MANIFEST = f"{USER_FRESH_VIEW}.json"
LAYOUT = 2  # bump when the rows' meaning changes: every day is then folded again
RECENT_PSEUDO_COUNT = 2.0  # the recent mean is over few ratings: shrunk less than the whole-history ones
POSITIVES, RATING_SUM, LAST_EVENT, STAMP, RECENT_RATINGS = USER_FRESH_STATE_COLUMNS
FEATURE_COLUMNS = tuple(f.name for f in view_features(USER_FRESH_VIEW))
COUNT, POS_RATE, MEAN_RATING, RECENT_MEAN, RECENT_GENRE_LIST, RECENT_MOVIES = FEATURE_COLUMNS
LOG_COLUMNS = (USER_KEY, EVENT_TIMESTAMP, *FEATURE_COLUMNS, *USER_FRESH_STATE_COLUMNS)
# Events folded at a time by `update`: a batch's carried state (each user's last `RECENT_EVENTS` movies) is
# parsed once per batch rather than once per day; memory holds the batch's rows (~0.5 KB per event).
FOLD_BATCH_EVENTS = 2_000_000
MICROS_PER_DAY = 86_400_000_000
DAY, CARRIED = "day", "carried"  # `day_rows`: the day number of a row's file, and whether it is a carry row


def _micros(stamps: pd.Series) -> np.ndarray:
    return pd.to_datetime(stamps, utc=True).astype("datetime64[us, UTC]").astype("int64").to_numpy()


def _stamps(micros: np.ndarray) -> pd.Series:
    return pd.Series(pd.to_datetime(micros, unit="us", utc=True), dtype="datetime64[ns, UTC]")


def empty_state() -> pd.DataFrame:
    """A state without users: every user starts with no history."""
    return fold(pd.DataFrame(), pd.DataFrame(), pd.Series(dtype=object))


def seed_rows(user_ids, stamp: pd.Timestamp) -> pd.DataFrame:
    """The "no history" row of each user, stamped `stamp` (`ingest.PROFILE_TIMESTAMP`)."""
    users = pd.Series(pd.unique(pd.Series(user_ids, dtype=object).astype(str)), dtype=object)
    n = len(users)
    zeros = np.zeros(n, dtype=np.int64)
    return _rows(users, np.full(n, int(_micros(pd.Series([stamp]))[0])), zeros.astype(float), zeros, zeros,
                 np.zeros(n), zeros, np.full(n, ""), np.full(n, ""), np.full(n, ""))  # fmt: skip


def _rows(users, stamps, count, positives, rating_sum, recent_sum, recent_n, recent_genres, recent_movies,
          recent_ratings, last_event=None) -> pd.DataFrame:  # fmt: skip
    count = np.asarray(count, dtype=np.float64)
    return pd.DataFrame(
        {
            USER_KEY: pd.Series(users, dtype=object).to_numpy(),
            EVENT_TIMESTAMP: _stamps(np.asarray(stamps, dtype=np.int64)),
            COUNT: count,
            POS_RATE: (np.asarray(positives) + PSEUDO_COUNT * PRIOR_POS_RATE) / (count + PSEUDO_COUNT),
            MEAN_RATING: (np.asarray(rating_sum) + PSEUDO_COUNT * PRIOR_MEAN_RATING) / (count + PSEUDO_COUNT),
            RECENT_MEAN: (np.asarray(recent_sum, dtype=np.float64) + RECENT_PSEUDO_COUNT * PRIOR_MEAN_RATING)
            / (np.asarray(recent_n, dtype=np.float64) + RECENT_PSEUDO_COUNT),
            RECENT_GENRE_LIST: np.asarray(recent_genres, dtype=object),
            POSITIVES: np.asarray(positives, dtype=np.int64),
            RATING_SUM: np.asarray(rating_sum, dtype=np.int64),
            LAST_EVENT: np.asarray(stamps if last_event is None else last_event, dtype=np.int64),
            STAMP: np.asarray(stamps, dtype=np.int64),
            RECENT_MOVIES: np.asarray(recent_movies, dtype=object),
            RECENT_RATINGS: np.asarray(recent_ratings, dtype=object),
        }
    )


def fold(state: pd.DataFrame, events: pd.DataFrame, genres: pd.Series) -> pd.DataFrame:
    """The `user_fresh` rows after each (user, instant) of `events`, continuing each user's `state`.

    Args:
        state: the latest row per user (columns `LOG_COLUMNS`, any users); users absent start with no history.
        events: columns user_id, movie_id, rating, event_timestamp; none earlier than its user's last event
            in `state` (`LAST_EVENT`).
        genres: each movie's genres (joined by the separator), indexed by movie id; unknown movies have none.

    Returns:
        Columns `LOG_COLUMNS`, one row per (user, instant), sorted by user then time, stamped as the module
        docstring says.
    """
    if events.empty:
        return seed_rows([], pd.Timestamp(0, tz="UTC"))
    # Users are integer codes in id order: sorting and the per-user sums below work on integers, not strings.
    new_codes, user_ids = pd.factorize(events[USER_KEY].astype(str).to_numpy(dtype=object), sort=True)
    new_t = _micros(events[EVENT_TIMESTAMP])
    prior = state.drop_duplicates(USER_KEY, keep="last").set_index(USER_KEY).reindex(user_ids)
    last_event = prior[LAST_EVENT].fillna(-np.inf).to_numpy()[new_codes]
    if (too_old := new_t < last_event).any():
        raise ValueError(f"Events before their user's last folded event: {events[too_old].head(3).to_dict('records')}")
    carried_codes, carried_movies, carried_ratings = _carried(prior)
    n_carried = len(carried_codes)
    codes = np.concatenate([carried_codes, new_codes])
    movie_codes, movie_ids = pd.factorize(
        np.concatenate([carried_movies, events[MOVIE_KEY].astype(str).to_numpy(dtype=object)]), sort=True
    )
    del carried_movies  # a string per carried item; the codes and the unique ids are what the fold needs
    is_new = np.r_[np.zeros(n_carried, dtype=bool), np.ones(len(events), dtype=bool)]
    t = np.r_[np.zeros(n_carried, dtype=np.int64), new_t]
    # Per user: the carried rows first, in their order, then the new events by time, then movie id.
    order = np.lexsort((np.arange(len(codes)), np.where(is_new, movie_codes, 0), t, is_new, codes))
    codes, movie_codes, is_new, t = codes[order], movie_codes[order], is_new[order], t[order]
    ratings = np.r_[carried_ratings, events[RATING].astype(np.int64).to_numpy()][order]
    start = np.r_[0, np.flatnonzero(codes[1:] != codes[:-1]) + 1]
    first = np.repeat(start, np.diff(np.r_[start, len(codes)]))  # each row's user's first row
    index = np.arange(len(codes))
    lo = np.maximum(index + 1 - RECENT_EVENTS, first)  # the window of the last RECENT_EVENTS items is [lo, index]
    movie_genres = genre_indicators(genres.reindex(movie_ids)).astype(np.uint8)

    # The row after the user's events at an instant: the last new row of each (user, t) run.
    last_of_instant = is_new & np.r_[(codes[1:] != codes[:-1]) | (t[1:] != t[:-1]), True]
    out = np.flatnonzero(last_of_instant)
    out_codes = codes[out]
    base = {column: prior[column].fillna(0).to_numpy()[out_codes] for column in (COUNT, POSITIVES, RATING_SUM)}
    count = base[COUNT] + _running_sum(is_new, first)[out]
    positives = base[POSITIVES].astype(np.int64) + _running_sum(is_new & (ratings >= POSITIVE_RATING), first)[out]
    rating_sum = base[RATING_SUM].astype(np.int64) + _running_sum(np.where(is_new, ratings, 0), first)[out]
    recent_n = out + 1 - lo[out]
    recent_sum = _window_sum(ratings, lo[out], out)
    genre_counts = _window_genre_counts(movie_genres, movie_codes, lo[out], out)
    # Stamps t + 1 µs, each after the user's previous one: s_i = i + max(previous stamp + 1, max_j<=i (t_j+1-j)).
    out_start = np.r_[0, np.flatnonzero(out_codes[1:] != out_codes[:-1]) + 1]
    rank = np.arange(len(out)) - np.repeat(out_start, np.diff(np.r_[out_start, len(out)]))
    ahead = pd.Series(t[out] + 1 - rank).groupby(out_codes).cummax().to_numpy()
    previous = prior[STAMP].to_numpy(dtype=np.float64)[out_codes]
    floor = np.where(np.isnan(previous), np.iinfo(np.int64).min // 2, np.nan_to_num(previous).astype(np.int64) + 1)
    stamps = rank + np.maximum(ahead, floor)
    recent = _recent_lists(movie_ids[movie_codes], ratings, out, lo)
    return _rows(user_ids[out_codes], stamps, count, positives, rating_sum, recent_sum, recent_n,
                 _top_genres(genre_counts), *recent, last_event=t[out])  # fmt: skip


def _running_sum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
    """Per row, the sum of `values` from its user's first row (`first`) to itself."""
    total = np.r_[0, np.cumsum(values, dtype=np.int64)]
    return total[1:] - total[first]


def _window_sum(values: np.ndarray, lo: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Per row of `rows`, the sum of `values[lo:row + 1]`."""
    total = np.r_[0, np.cumsum(values, dtype=np.int64)]
    return total[rows + 1] - total[lo]


def _carried(prior: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The recent movies and ratings of each user's state, one item per movie, oldest first: (row of `prior`,
    movie id, rating)."""
    movies = prior[RECENT_MOVIES].fillna("").to_numpy(dtype=object)
    rows = np.flatnonzero(movies != "")
    if not len(rows):
        return np.zeros(0, dtype=np.int64), np.zeros(0, dtype=object), np.zeros(0, dtype=np.int64)
    listed = movies[rows]
    lengths = np.fromiter((s.count(MULTI_VALUE_SEPARATOR) + 1 for s in listed), dtype=np.int64, count=len(rows))
    ratings = prior[RECENT_RATINGS].fillna("").to_numpy(dtype=object)[rows]
    return (
        np.repeat(rows, lengths),
        np.asarray(MULTI_VALUE_SEPARATOR.join(listed).split(MULTI_VALUE_SEPARATOR), dtype=object),
        np.asarray(MULTI_VALUE_SEPARATOR.join(ratings).split(MULTI_VALUE_SEPARATOR)).astype(np.int64),
    )


def _window_genre_counts(movie_genres: np.ndarray, movie_codes: np.ndarray, lo: np.ndarray,
                         rows: np.ndarray) -> np.ndarray:  # fmt: skip
    """Per row of `rows`, how many of the movies `movie_codes[lo:row + 1]` (at most `RECENT_EVENTS`) have each genre.

    `movie_genres` is `transformations.genre_indicators` of each movie code. The window is summed an offset at a
    time, so memory holds the output rows' counts, not a running count of every item.
    """
    counts = np.zeros((len(rows), len(GENRES)), dtype=np.int16)
    for offset in range(RECENT_EVENTS):
        inside = np.flatnonzero(rows - offset >= lo)
        counts[inside] += movie_genres[movie_codes[rows[inside] - offset]]
    return counts


def _top_genres(counts: np.ndarray) -> np.ndarray:
    """Per row, the genres with a positive count, most frequent first (ties in `GENRES` order), at most `RECENT_GENRES`."""
    order = np.argsort(-counts, axis=1, kind="stable")[:, :RECENT_GENRES]
    present = np.take_along_axis(counts, order, axis=1) > 0
    codes = np.where(present, order + 1, 0).astype(np.int64)
    keys = (codes * (len(GENRES) + 1) ** np.arange(RECENT_GENRES)).sum(axis=1)
    unique, inverse = np.unique(keys, return_inverse=True)
    digits = (unique[:, None] // (len(GENRES) + 1) ** np.arange(RECENT_GENRES)) % (len(GENRES) + 1)
    names = np.asarray(["", *GENRES], dtype=object)
    joined = names[digits[:, 0]]  # the present genres come first: a row's names are a prefix
    for k in range(1, RECENT_GENRES):
        joined = joined + np.where(digits[:, k] > 0, MULTI_VALUE_SEPARATOR + names[digits[:, k]], "")
    return joined[inverse.reshape(-1)]


def _recent_lists(movies: np.ndarray, ratings: np.ndarray, out: np.ndarray, lo: np.ndarray) -> tuple[list, list]:
    """The movie ids and ratings of each output row's window `[lo, row]`, oldest first, joined by the separator."""
    unique, inverse = np.unique(ratings, return_inverse=True)
    movies, ratings = movies.tolist(), unique.astype(str).astype(object)[inverse].tolist()  # one string per value
    join = MULTI_VALUE_SEPARATOR.join
    windows = list(zip(lo[out].tolist(), (out + 1).tolist(), strict=True))
    return [join(movies[a:b]) for a, b in windows], [join(ratings[a:b]) for a, b in windows]


def update(con: duckdb.DuckDBPyConnection, cutoff: pd.Timestamp, data_dir: Path, seed_stamp: pd.Timestamp,
           days: dict[str, list] | None = None, *, fold_days: Callable | None = None,
           write_now: Callable | None = None) -> int:  # fmt: skip
    """Bring the `user_fresh` log under `data_dir` to the events of `con` before `cutoff`; the days folded.

    Days are folded in time order, a batch of consecutive days at a time (up to `FOLD_BATCH_EVENTS` events in
    memory, at least one day), onto the state before them; each day's rows go to its own file. Folding days
    together gives the rows folding them one by one would (a user's rows depend only on their events in order).
    Only days whose events changed since the last update (and the days after them) are folded again; an
    earlier `cutoff` drops the days from it on. Live rows of days before `cutoff` are dropped: the events table
    holds those events, and the fold of the day replaces them.

    Args:
        con: a connection with the typed views `events`, `users`, `movies` (`raw_source`).
        cutoff: `data_cutoff(ds)`; events at or after it are not folded.
        data_dir: the repo's data folder.
        seed_stamp: the stamp of the "no history" rows (`ingest.PROFILE_TIMESTAMP`).
        days: `daily_stats.day_fingerprints(con, cutoff)` when the caller has them (and the views it creates).
        fold_days: what folds the stale days (`_fold_days`'s arguments); `spark_engine` passes its own.
        write_now: what writes the now rows (`_write_now`'s arguments); `spark_engine` passes its own.
    """
    fold_days, write_now = fold_days or _fold_days, write_now or _write_now
    folder = Path(data_dir) / USER_FRESH_VIEW
    folder.mkdir(parents=True, exist_ok=True)
    manifest_path = Path(data_dir) / AGGREGATES_DIR / FOLD_MANIFEST
    manifest_path.parent.mkdir(parents=True, exist_ok=True)
    days = daily_stats.day_fingerprints(con, cutoff) if days is None else days
    genres_digest = daily_stats.genres_digest(con)
    manifest = _read_json(manifest_path)
    same = manifest.get("layout") == LAYOUT and manifest.get("genres") == genres_digest
    old_days = manifest.get("days", {}) if same else {}
    stale = [d for d in days if old_days.get(d) != days[d] or not _day_file(folder, d).is_file()]
    stale += [d for d in old_days if d not in days]
    first = min(stale, default=None)
    _write(seed_rows(con.execute(f"SELECT {USER_KEY} FROM users").df()[USER_KEY], seed_stamp), folder / SEED_FILE)
    for path in folder.glob(f"{LIVE_PREFIX}*.parquet"):
        if path.name[len(LIVE_PREFIX) : len(LIVE_PREFIX) + 10] < cutoff.strftime("%Y-%m-%d"):
            path.unlink()
    if first is not None:
        drop_days_from(folder, first)
        fold_days(con, folder, manifest_path.parent, days, first)
    now = folder / f"{NOW_PREFIX}{cutoff.strftime('%Y-%m-%d')}.parquet"
    for path in folder.glob(f"{NOW_PREFIX}*.parquet"):
        if path != now:
            path.unlink()
    write_now(con, folder, cutoff, now)
    write_json(manifest_path, {"layout": LAYOUT, "genres": genres_digest, "cutoff": cutoff.isoformat(), "days": days})
    if first is not None:
        logger.info("user_fresh log: folded %d day(s) from %s", sum(d >= first for d in days), first)
    return sum(d >= first for d in days) if first is not None else 0


def drop_days_from(folder: Path, first: str) -> None:
    """Delete the day files of the log from day `first` on (they are folded again)."""
    for path in folder.glob("????-??-??.parquet"):
        if path.stem >= first:
            path.unlink()


def _write_now(con: duckdb.DuckDBPyConnection, folder: Path, cutoff: pd.Timestamp, path: Path) -> None:
    """The now rows: each user's latest row of the seed and the day files before `cutoff`, stamped `cutoff`."""
    _write(_restamped(latest_state(folder, before_day=cutoff.strftime("%Y-%m-%d")), cutoff), path)


def _fold_days(con: duckdb.DuckDBPyConnection, folder: Path, scratch: Path, days: dict[str, list], first: str) -> None:
    """Fold the days of `days` from `first` on onto the state before `first`: their files under `folder`."""
    state = latest_state(folder, before_day=first)
    movies = con.execute(f"SELECT {MOVIE_KEY}, coalesce(genres, '') AS genres FROM movies").df()
    genres = pd.Series(movies["genres"].to_numpy(), index=movies[MOVIE_KEY].astype(str).to_numpy())
    folded = [d for d in sorted(days) if d >= first]
    with tempfile.TemporaryDirectory(prefix="fold-", dir=scratch) as parts:
        # One scan of the events writes every day to fold into its own file; batches of days are then read.
        con.execute(
            f"COPY (SELECT {USER_KEY}, {MOVIE_KEY}, {RATING}, {EVENT_TIMESTAMP}, strftime(day, '%Y-%m-%d') AS d "
            f"FROM labelled WHERE day >= {sql.instant(first)}) "
            f"TO {sql.literal(parts)} (FORMAT parquet, PARTITION_BY (d))"
        )
        for batch in _batches(folded, {day: days[day][0] for day in folded}, FOLD_BATCH_EVENTS):
            frames = [pd.read_parquet(Path(parts) / f"d={day}", columns=list(EVENT_COLUMNS)) for day in batch]
            events = pd.concat(frames, ignore_index=True)
            rows = day_rows(state, events, genres)
            for day in batch:
                _write(rows[rows[DAY] == day_number(day)], _day_file(folder, day))
            folded_rows = rows.loc[~rows[CARRIED], list(LOG_COLUMNS)]
            state = pd.concat([state, folded_rows], ignore_index=True).drop_duplicates(USER_KEY, keep="last")


def day_number(day: str) -> int:
    """Days since the epoch of `YYYY-MM-DD` (UTC): the `DAY` of `day_rows`."""
    return pd.Timestamp(day, tz="UTC").value // 1_000 // MICROS_PER_DAY


def day_rows(state: pd.DataFrame, events: pd.DataFrame, genres: pd.Series) -> pd.DataFrame:
    """The rows of the day files that `events` fill, folded onto `state` (`fold`'s arguments).

    Both engines call it: DuckDB's fold on a batch of days, Spark's on each user's events (`spark_engine`); a
    user's rows depend only on their own state and events. Columns `LOG_COLUMNS`, `DAY` (`day_number` of the
    row's file) and `CARRIED`; by day, the day's carry rows (by user) first, then the rows of its events (by
    user, then time).
    """
    rows = fold(state, events, genres)
    row_days = rows[LAST_EVENT].to_numpy() // MICROS_PER_DAY
    carried, carried_days = _carry_rows(state, rows, row_days)
    both = pd.concat([carried.assign(**{DAY: carried_days, CARRIED: True}),
                      rows.assign(**{DAY: row_days, CARRIED: False})], ignore_index=True)  # fmt: skip
    order = np.lexsort((np.arange(len(both)), ~both[CARRIED].to_numpy(), both[DAY].to_numpy()))
    return both.iloc[order].reset_index(drop=True)


def _carry_rows(state: pd.DataFrame, rows: pd.DataFrame, row_days: np.ndarray) -> tuple[pd.DataFrame, np.ndarray]:
    """The carry rows of the days of `rows` (a fold's output onto `state`, sorted by user then time) and their days.

    A user's carry row of day D is their latest row before D (the row before their first of D, or their `state`
    row), stamped D 00:00 UTC. `row_days` are the days of `rows`' events (`MICROS_PER_DAY` numbers); the carry
    rows come sorted by day, then user.
    """
    users = rows[USER_KEY].to_numpy(dtype=object)
    firsts = np.flatnonzero(np.r_[True, (users[1:] != users[:-1]) | (row_days[1:] != row_days[:-1])])
    after_own = np.zeros(len(firsts), dtype=bool)
    after_own[1:] = users[firsts[1:] - 1] == users[firsts[1:]]
    from_state = state.drop_duplicates(USER_KEY, keep="last").set_index(USER_KEY).reindex(users[firsts[~after_own]])
    known = from_state[STAMP].notna().to_numpy()
    previous = pd.concat(
        [rows.iloc[firsts[after_own] - 1], from_state[known].rename_axis(USER_KEY).reset_index()[list(LOG_COLUMNS)]],
        ignore_index=True,
    )
    days = np.r_[row_days[firsts[after_own]], row_days[firsts[~after_own]][known]]
    previous[EVENT_TIMESTAMP] = _stamps(days * MICROS_PER_DAY)
    # `rows` is sorted by user: within a day, the users' first rows lie in user order.
    order = np.lexsort((np.r_[firsts[after_own], firsts[~after_own][known]], days))
    return previous.iloc[order].reset_index(drop=True), days[order]


def _restamped(rows: pd.DataFrame, stamp: pd.Timestamp) -> pd.DataFrame:
    """`rows` with the same values, stamped `stamp` (the now rows)."""
    rows = rows.copy()
    rows[EVENT_TIMESTAMP] = pd.Series(to_utc(stamp), index=rows.index).astype("datetime64[ns, UTC]")
    return rows


def _batches(days: list[str], counts: dict[str, int], limit: int) -> list[list[str]]:
    """`days` in order, cut into runs of at most `limit` events (`counts` per day); a larger day is a run alone."""
    batches: list[list[str]] = []
    total = limit
    for day in days:
        if total + counts[day] > limit:
            batches.append([])
            total = 0
        batches[-1].append(day)
        total += counts[day]
    return batches


def latest_state(folder: Path, *, before_day: str | None = None, until: pd.Timestamp | None = None) -> pd.DataFrame:
    """The latest row per user of the log in `folder` (columns `LOG_COLUMNS`).

    Args:
        folder: the log's folder (`data/user_fresh`).
        before_day: only the seed and the day files before this day (`YYYY-MM-DD`); live rows are left out.
        until: only rows stamped at or before this instant.
    """
    files = log_files(folder, before_day)
    if not files:
        return empty_state()
    with raw_source.session() as con:
        state = con.execute(latest_query(files, until)).df()
    state[EVENT_TIMESTAMP] = pd.to_datetime(state[EVENT_TIMESTAMP], utc=True).astype("datetime64[ns, UTC]")
    return state


def log_files(folder: Path, before_day: str | None = None) -> list[Path]:
    """The seed and the day files of the log before `before_day` (`YYYY-MM-DD`); every file, live ones too, when
    `None`."""
    files = [folder / SEED_FILE] if (folder / SEED_FILE).is_file() else []
    days = sorted(folder.glob("????-??-??.parquet"))
    files += [f for f in days if before_day is None or f.stem < before_day]
    if before_day is None:
        files += sorted(folder.glob(f"{LIVE_PREFIX}*.parquet"))
    return files


def latest_query(files: list[Path], until: pd.Timestamp | None = None) -> str:
    """SQL of the latest row per user of the log `files` (stamped at or before `until`), by user; both engines run it."""
    where = f"WHERE {EVENT_TIMESTAMP} <= {sql.instant(until)}" if until is not None else ""
    columns = ", ".join(LOG_COLUMNS)
    return (
        f"SELECT {columns} FROM (SELECT {columns}, row_number() OVER (PARTITION BY {USER_KEY} ORDER BY "
        f"{EVENT_TIMESTAMP} DESC) AS recency FROM read_parquet({sql.files(files)}) {where}) WHERE recency = 1 "
        f"ORDER BY {USER_KEY}"
    )


def write_live(rows: pd.DataFrame, folder: Path) -> Path:
    """Add rows pushed live to the log: a file named for the day of their first event."""
    day = pd.to_datetime(rows[EVENT_TIMESTAMP], utc=True).min().strftime("%Y-%m-%d")
    return _write(rows, Path(folder) / f"{LIVE_PREFIX}{day}-{uuid.uuid4().hex}.parquet")


def _day_file(folder: Path, day: str) -> Path:
    return folder / f"{day}.parquet"


def _write(rows: pd.DataFrame, path: Path) -> Path:
    """`rows`' `LOG_COLUMNS` to parquet, stamps in microseconds (Spark reads no nanosecond timestamps)."""
    rows = rows[list(LOG_COLUMNS)].astype({EVENT_TIMESTAMP: "datetime64[us, UTC]"})
    with staged_path(path) as staged:
        rows.to_parquet(staged, index=False)
    return path


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
