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

Draws are seeded per run (`seed`), rejected draws are drawn again (`MAX_ROUNDS` times), and a draw still
rejected (a user who rated almost the whole catalogue) is dropped and counted.

At scale the sampled rows, not the events, would set the night's length: each is an entity row of Feast's
point-in-time join and a training row. With `max_rows`, when `events * per_event` draws would be more, a seeded
uniform subset of `max_rows` draws is kept (each event keeps each of its draws with the same chance), so the rate
falls to `max_rows / events` per event; the record says so (`rate`).
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
        max_rows: at most this many draws: a seeded uniform subset when `events * per_event` is more.

    Returns:
        The sampled rows (user_id, movie_id, event_timestamp of their event, rating 0, label 0, picked 0, and
        `EVENT_POSITION`, the event's row in `events`), ordered by event position; and the record.
    """
    if per_event < 0:
        raise ValueError(f"`per_event` must not be negative. Received: `per_event={per_event}`")
    if max_rows is not None and max_rows < 0:
        raise ValueError(f"`max_rows` must not be negative. Received: `max_rows={max_rows}`")
    catalogue = np.asarray(catalogue).astype(str)
    if per_event and not len(catalogue):
        raise ValueError("`catalogue` is empty: there is nothing to sample from")
    rng = np.random.default_rng(seed)
    movie_codes = pd.Index(catalogue)
    users, user_index = pd.factorize(events[USER_KEY].astype(str))
    movies = movie_codes.get_indexer(events[MOVIE_KEY].astype(str))
    times = pd.to_datetime(events[EVENT_TIMESTAMP], utc=True).to_numpy("datetime64[us]").view("int64")
    n_movies = len(catalogue)
    known = movies >= 0
    # The first time each user rated each movie, keyed by user * movies + movie, sorted for lookups.
    first = (
        pd.DataFrame({"key": users[known].astype(np.int64) * n_movies + movies[known], "t": times[known]})
        .groupby("key", sort=True)["t"]
        .min()
    )
    keys, first_times = first.index.to_numpy(np.int64), first.to_numpy(np.int64)
    position = np.repeat(np.flatnonzero(known), per_event)
    if max_rows is not None and len(position) > max_rows:
        position = position[np.sort(rng.choice(len(position), size=max_rows, replace=False))]
    draw_users = users[position].astype(np.int64)
    draw_times = times[position]

    def draw(rows: np.ndarray) -> np.ndarray:
        return rng.integers(0, n_movies, size=len(rows), dtype=np.int64)

    drawn = draw(np.arange(len(position)))
    pending = np.arange(len(position))
    for _ in range(MAX_ROUNDS):
        pending = pending[_rated_by(draw_users[pending] * n_movies + drawn[pending], draw_times[pending], keys,
                                    first_times)]  # fmt: skip
        if not len(pending):
            break
        drawn[pending] = draw(pending)
    pending = pending[_rated_by(draw_users[pending] * n_movies + drawn[pending], draw_times[pending], keys,
                                first_times)]  # fmt: skip
    keep = np.ones(len(position), dtype=bool)
    keep[pending] = False
    rows = pd.DataFrame(
        {
            USER_KEY: np.asarray(user_index)[draw_users[keep]],
            MOVIE_KEY: catalogue[drawn[keep]],
            EVENT_TIMESTAMP: pd.to_datetime(events[EVENT_TIMESTAMP], utc=True).to_numpy()[position[keep]],
            RATING: np.zeros(int(keep.sum()), dtype=np.int64),
            LABEL: np.zeros(int(keep.sum()), dtype=np.int64),
            PICKED: np.zeros(int(keep.sum()), dtype=np.int64),
            EVENT_POSITION: position[keep],
        }
    )
    rows[EVENT_TIMESTAMP] = pd.to_datetime(rows[EVENT_TIMESTAMP], utc=True)
    rate = len(position) / max(int(known.sum()), 1)
    record = SamplingRecord(per_event, seed, len(events), len(rows), int(len(pending)), n_movies, max_rows, rate)
    return rows, record


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
    events = pd.read_parquet(events_path, columns=[USER_KEY, MOVIE_KEY, EVENT_TIMESTAMP])
    rows, record = sample_unrated(events, catalogue, per_event, seed, max_rows)
    rows[EVENT_TIMESTAMP] = rows[EVENT_TIMESTAMP].astype("datetime64[us, UTC]")
    with staged_path(path) as staged:
        rows.to_parquet(staged, index=False)
    return record
