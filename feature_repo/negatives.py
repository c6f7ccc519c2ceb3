"""Sampled negatives: for each rated event, movies the user had not rated before it (the "not picked" rows).

A model trained only on rated events learns "will the user like a movie they chose to rate" and ranks well-rated
classics the user will never watch; the stack serves a top-N list over the whole catalogue, so the model must
also learn what a user picks among everything (Cremonesi, Koren and Turrin, RecSys 2010). For every event
(user u at instant t) `sample_unrated` draws `per_event` movies uniformly from the catalogue among those u had
not rated at or before t (the event's own movie included). The rows are entity rows like the events' own: their
features come point-in-time through Feast with the training set's (`store.write_training_set`), so a sampled
pair sees exactly what a real event at that instant would. For that, the movie stats hold a row for every movie
on every day with events (`daily_stats`, `every_day`): with rows only on a movie's own days, a sampled movie would
mostly have none within the one-day TTL, and a model would learn "no movie stats: not picked", a signal serving
(where every movie has its "now" row) never shows.

Every draw is a function of the seed, its event's position in the run's labelled events, its number among the
event's draws and its round alone (a counter-based generator: `_random_bits`), and the "rated before" test reads
only the user's own events. So any grouping of whole users gives the same rows: `draw_unrated` runs here on every
event at once, or per bucket of users on Spark (`spark_engine.write_sampled`), and the rows are equal. A rejected
draw is drawn again (`MAX_ROUNDS` times); one still rejected (a user who rated almost the whole catalogue) is
dropped and counted.

At scale the sampled rows, not the events, would set the night's length: each is an entity row of Feast's
point-in-time join and a training row. With `max_rows`, when `events * per_event` draws would be more, each event
gets the floor or the ceiling of `max_rows / events` draws, spread evenly along the history (`draws_per_event`):
exactly `max_rows` draws, every stretch of the history its share; the record says so (`rate`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfm_model.spec.features import EVENT_TIMESTAMP, LABEL, MOVIE_KEY, PICKED, RATING, USER_KEY
from deepfm_model.spec.files import staged_path

MAX_ROUNDS = 32  # redraws of rejected samples before they are dropped
EVENT_POSITION = "event_position"  # the sampled row's event: its row in the run's labelled events
DRAW = "draw"  # the draw's number among its event's: rows are ordered by (EVENT_POSITION, DRAW)
EVENT_COLUMNS = [USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP]  # what sampling reads of the labelled events
# splitmix64's increment and finaliser multipliers (Steele, Lea and Flood, OOPSLA 2014).
_GOLDEN, _MIX_1, _MIX_2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


@dataclass(frozen=True)
class SamplingRecord:
    """What a run's sampling did; written beside the run's events (`RunDir.sampling`).

    Attributes:
        per_event: sampled movies per rated event, as configured.
        seed: the generator's seed.
        events: rated events sampled for.
        rows: sampled rows written (`draws - dropped`).
        dropped: draws rejected `MAX_ROUNDS` times (the user had rated nearly every movie).
        catalogue: movies drawn from.
        max_rows: the cap on draws (`None`: none).
        rate: draws per event after the cap (`per_event` when it did not bind).
    """

    per_event: int
    seed: int
    events: int
    rows: int
    dropped: int
    catalogue: int
    max_rows: int | None = None
    rate: float = 0.0


def check_arguments(catalogue: np.ndarray, per_event: int, max_rows: int | None) -> np.ndarray:
    """The catalogue as str; a clear error for a negative `per_event` or `max_rows`, or nothing to draw from."""
    if per_event < 0:
        raise ValueError(f"`per_event` must not be negative. Received: `per_event={per_event}`")
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"`max_rows` must not be negative. Received: `max_rows={max_rows}`")
    catalogue = np.asarray(catalogue).astype(str)
    if per_event and not len(catalogue):
        raise ValueError("`catalogue` is empty: there is nothing to sample from")
    return catalogue


def draws_per_event(positions: np.ndarray, events: int, per_event: int, max_rows: int | None) -> np.ndarray:
    """Draws of the events at `positions` among `events`: `per_event` each, or under the cap `max_rows`, the
    floor or ceiling of `max_rows / events` each, spread evenly so that all `events` together get `max_rows`."""
    positions = np.asarray(positions, dtype=np.int64)
    if max_rows is None or events * per_event <= max_rows:
        return np.full(len(positions), per_event, dtype=np.int64)
    return (positions + 1) * max_rows // events - positions * max_rows // events


def draw_unrated(events: pd.DataFrame, catalogue: np.ndarray, per_event: int, seed: int, total_events: int,
                 max_rows: int | None = None) -> pd.DataFrame:  # fmt: skip
    """The draws for `events`, whole users' histories: every draw of every event whose movie is in `catalogue`.

    Args:
        events: `EVENT_COLUMNS` and `EVENT_POSITION` (the event's row among all `total_events`), every event of
            each user present: the "not rated before" test reads the user's events.
        catalogue: movie ids (str) drawn from; events of other movies are neither sampled for nor drawn.
        per_event, max_rows: as `sample_unrated`'s (`draws_per_event`).
        seed: the generator's seed.
        total_events: the labelled events of the run (positions run from 0 to it).

    Returns:
        One row per draw, ordered by (`EVENT_POSITION`, `DRAW`): user, movie (`None` where the draw was rejected
        `MAX_ROUNDS` times), the event's timestamp, rating, label and picked 0, `EVENT_POSITION` and `DRAW`.
    """
    movie_codes = pd.Index(catalogue)
    users, user_index = pd.factorize(events[USER_KEY].astype(str))
    movies = movie_codes.get_indexer(events[MOVIE_KEY].astype(str))
    stamps = pd.to_datetime(events[EVENT_TIMESTAMP], utc=True)
    times = stamps.to_numpy("datetime64[us]").view("int64")
    positions = events[EVENT_POSITION].to_numpy(np.int64)
    n_movies = len(catalogue)
    known = np.flatnonzero(movies >= 0)
    # The first time each user rated each movie, keyed by user * movies + movie, sorted for lookups.
    first = (
        pd.DataFrame({"key": users[known].astype(np.int64) * n_movies + movies[known], "t": times[known]})
        .groupby("key", sort=True)["t"]
        .min()
    )
    keys, first_times = first.index.to_numpy(np.int64), first.to_numpy(np.int64)
    known = known[np.argsort(positions[known], kind="stable")]
    counts = draws_per_event(positions[known], total_events, per_event, max_rows)
    event = np.repeat(known, counts)
    draw = np.arange(len(event)) - np.repeat(np.cumsum(counts) - counts, counts)
    draw_keys = users[event].astype(np.int64) * n_movies
    drawn = np.zeros(len(event), dtype=np.int64)
    pending = np.arange(len(event))
    for round_ in range(MAX_ROUNDS + 1):
        bits = _random_bits(seed, positions[event[pending]], draw[pending], round_)
        drawn[pending] = (bits % np.uint64(n_movies)).astype(np.int64)
        pending = pending[_rated_by(draw_keys[pending] + drawn[pending], times[event[pending]], keys, first_times)]
        if not len(pending):
            break
    movie = catalogue[drawn].astype(object)
    movie[pending] = None
    zeros = np.zeros(len(event), dtype=np.int64)
    return pd.DataFrame(
        {
            USER_KEY: np.asarray(user_index, dtype=object)[users[event]],
            MOVIE_KEY: movie,
            EVENT_TIMESTAMP: stamps.array.take(event),
            RATING: zeros,
            LABEL: zeros,
            PICKED: zeros,
            EVENT_POSITION: positions[event],
            DRAW: draw,
        }
    )


def sample_unrated(
    events: pd.DataFrame, catalogue: np.ndarray, per_event: int, seed: int, max_rows: int | None = None
) -> tuple[pd.DataFrame, SamplingRecord]:
    """Movies each event's user had not rated at or before the event, `per_event` per event, uniformly.

    Args:
        events: the labelled events (user_id, movie_id, event_timestamp), every event of the history in row
            order: the "not rated before" test reads them all.
        catalogue: movie ids of the catalogue (str); events of other movies are neither sampled for nor drawn.
        per_event: draws per event; 0 gives no rows.
        seed: seeds the generator: the same events, catalogue and seed give the same rows.
        max_rows: at most this many draws (`draws_per_event`) when `events * per_event` is more.

    Returns:
        The sampled rows (user_id, movie_id, event_timestamp of their event, rating 0, label 0, picked 0, and
        `EVENT_POSITION`, the event's row in `events`), ordered by event position; and the record.
    """
    catalogue = check_arguments(catalogue, per_event, max_rows)
    positioned = events[EVENT_COLUMNS].assign(**{EVENT_POSITION: np.arange(len(events), dtype=np.int64)})
    draws = draw_unrated(positioned, catalogue, per_event, seed, len(events), max_rows)
    known = int((pd.Index(catalogue).get_indexer(events[MOVIE_KEY].astype(str)) >= 0).sum())
    rows = draws[draws[MOVIE_KEY].notna()].drop(columns=DRAW).reset_index(drop=True)
    return rows, sampling_record(per_event, seed, len(events), known, len(draws), len(rows), len(catalogue), max_rows)


def sampling_record(per_event: int, seed: int, events: int, known: int, draws: int, rows: int, catalogue: int,
                    max_rows: int | None) -> SamplingRecord:  # fmt: skip
    """The record of a sampling that drew `draws` times for the `known` of `events` and kept `rows`."""
    return SamplingRecord(per_event, seed, events, rows, draws - rows, catalogue, max_rows, draws / max(known, 1))


def _random_bits(seed: int, positions: np.ndarray, draws: np.ndarray, round_: int) -> np.ndarray:
    """64 uniform bits for each (seed, event position, draw, round): splitmix64 over the counters, so a draw is
    the same whichever process, partition or order draws it."""
    state = _mixed(np.full(len(positions), seed % 2**64, dtype=np.uint64) + _GOLDEN)
    state = _mixed(state ^ (positions.astype(np.uint64) * _GOLDEN))
    return _mixed(state ^ ((draws.astype(np.uint64) << np.uint64(8)) + np.uint64(round_)))


def _mixed(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: each bit of the result depends on every bit of `x` (uint64, wrapping)."""
    x = (x ^ (x >> np.uint64(30))) * _MIX_1
    x = (x ^ (x >> np.uint64(27))) * _MIX_2
    return x ^ (x >> np.uint64(31))


def _rated_by(keys: np.ndarray, times: np.ndarray, known_keys: np.ndarray, first_times: np.ndarray) -> np.ndarray:
    """Whether each (user, movie) key was first rated at or before its time."""
    at = np.searchsorted(known_keys, keys)
    found = at < len(known_keys)
    found[found] = known_keys[at[found]] == keys[found]
    rated = np.zeros(len(keys), dtype=bool)
    rated[found] = first_times[at[found]] <= times[found]
    return rated


def write_sampled(
    events_path: Path, catalogue: np.ndarray, per_event: int, seed: int, path: Path, max_rows: int | None = None
) -> SamplingRecord:
    """`sample_unrated` over the labelled events in `events_path`; the rows written to `path` (parquet, staged)."""
    events = pd.read_parquet(events_path, columns=EVENT_COLUMNS)
    rows, record = sample_unrated(events, catalogue, per_event, seed, max_rows)
    rows[EVENT_TIMESTAMP] = rows[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    with staged_path(path) as staged:
        rows.to_parquet(staged, index=False)
    return record
