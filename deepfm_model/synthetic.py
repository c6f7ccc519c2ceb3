"""A small synthetic MovieLens-shaped data set with planted structure, for fast tests and scale runs.

Ratings follow a planted truth: a user bias, a movie bias, an age-by-genre interaction and a latent
user-movie affinity, plus noise. The schema equals MovieLens-100K's (`RawData`), so the whole pipeline runs on it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from deepfm_model.spec.features import GENDERS, GENRES, MULTI_VALUE_SEPARATOR, OCCUPATIONS
from deepfm_model.spec.raw_data import RawData


def generate(
    n_users: int = 200,
    n_movies: int = 150,
    n_events: int = 6000,
    start: str = "1998-01-01",
    days: int = 30,
    seed: int = 0,
) -> RawData:
    """Generate users, movies and rating events spread over `days` days from `start` (UTC).

    Args:
        n_users: number of users.
        n_movies: number of movies.
        n_events: number of rating events (distinct user-movie pairs are not enforced).
        start: first day of events, ISO date.
        days: length of the event window in days.
        seed: random seed; the same seed gives the same tables.

    Returns:
        `RawData` with events sorted by time.
    """
    rng = np.random.default_rng(seed)
    users = pd.DataFrame(
        {
            "user_id": [str(i) for i in range(1, n_users + 1)],
            "age": rng.integers(15, 70, n_users),
            "gender": rng.choice(GENDERS, n_users),
            "occupation": rng.choice(OCCUPATIONS, n_users),
            "zip_code": [f"{z:05d}" for z in rng.integers(1000, 99999, n_users)],
        }
    )
    movie_genres = [
        MULTI_VALUE_SEPARATOR.join(sorted(rng.choice(GENRES[1:], rng.integers(1, 4), replace=False)))
        for _ in range(n_movies)
    ]
    movies = pd.DataFrame(
        {
            "movie_id": [str(i) for i in range(1, n_movies + 1)],
            "title": [f"Synthetic Movie {i}" for i in range(1, n_movies + 1)],
            "release_year": rng.integers(1950, 1998, n_movies).astype(float),
            "genres": movie_genres,
        }
    )
    user_bias = rng.normal(0, 0.6, n_users)
    movie_bias = rng.normal(0, 0.6, n_movies)
    user_factor = rng.normal(0, 0.5, (n_users, 4))
    movie_factor = rng.normal(0, 0.5, (n_movies, 4))
    popularity = rng.zipf(1.6, n_movies).astype(float)
    u = rng.integers(0, n_users, n_events)
    m = rng.choice(n_movies, n_events, p=popularity / popularity.sum())
    young = users["age"].to_numpy()[u] < 30
    action = np.array(["Action" in g for g in movie_genres])[m]
    score = (
        3.9
        + user_bias[u]
        + movie_bias[m]
        + np.sum(user_factor[u] * movie_factor[m], axis=1)
        + 0.8 * (young & action)
        + rng.normal(0, 0.6, n_events)
    )
    seconds = np.sort(rng.integers(0, days * 86400, n_events))
    events = pd.DataFrame(
        {
            "user_id": users["user_id"].to_numpy()[u],
            "movie_id": movies["movie_id"].to_numpy()[m],
            "rating": np.clip(np.rint(score), 1, 5).astype("int64"),
            "event_timestamp": pd.Timestamp(start, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
        }
    )
    return RawData(events, users, movies)
