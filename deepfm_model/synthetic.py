"""Synthetic MovieLens-shaped data with planted structure: small tables for tests, parquet folders for scale runs.

Ratings follow a planted truth: a user bias, a movie bias, an age-by-genre interaction and a latent
user-movie affinity, plus noise; movies are drawn by a Zipf popularity. The schema equals MovieLens-100K's
(`RawData`), so the whole pipeline runs on it.

- `generate(...)`: the tables in memory (tests; `DEEPFM_SOURCE=synthetic`).
- `write_folder(...)` and the command line: `events.parquet`, `users.parquet`, `movies.parquet` in the schema a
  `DEEPFM_SOURCE=parquet` folder has (`feature_repo.raw_source`), written chunk by chunk in bounded memory (one
  chunk of events at a time, so 10^8 events need no more memory than 10^6), without duplicate events:

    python -m deepfm_model.synthetic --events 10M --users 500k --movies 50k --start 1998-01-01 --days 30 \\
        --out data/synthetic-10m
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from deepfm_model.spec.features import GENDERS, GENRES, MULTI_VALUE_SEPARATOR, OCCUPATIONS
from deepfm_model.spec.files import staged_path
from deepfm_model.spec.raw_data import RawData

logger = logging.getLogger(__name__)

DAY_SECONDS = 86_400
CHUNK_EVENTS = 1_000_000  # events drawn, de-duplicated and written at a time by `write_folder`
# `write_folder`: the movie of popularity rank r gets a share of events proportional to r^-exponent (Zipf's law;
# 50k movies: the top one ~3%). `generate` keeps its raw Zipf draws, under which one movie can take most events.
POPULARITY_EXPONENT = 0.8
EVENTS_FILE, USERS_FILE, MOVIES_FILE = "events.parquet", "users.parquet", "movies.parquet"


@dataclass(frozen=True)
class PlantedWorld:
    """Users, movies and the hidden parameters their ratings are drawn from."""

    users: pd.DataFrame
    movies: pd.DataFrame
    user_bias: np.ndarray  # (users,)
    movie_bias: np.ndarray  # (movies,)
    user_factor: np.ndarray  # (users, 4)
    movie_factor: np.ndarray  # (movies, 4)
    movie_probability: np.ndarray  # (movies,) Zipf popularity, sums to 1
    young: np.ndarray  # (users,) bool: under 30
    action: np.ndarray  # (movies,) bool: has the Action genre


def plant(rng: np.random.Generator, n_users: int, n_movies: int) -> PlantedWorld:
    """Draw the users, movies and planted parameters (in the order `generate` always drew them)."""
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
    return PlantedWorld(
        users=users,
        movies=movies,
        user_bias=user_bias,
        movie_bias=movie_bias,
        user_factor=user_factor,
        movie_factor=movie_factor,
        movie_probability=popularity / popularity.sum(),
        young=users["age"].to_numpy() < 30,
        action=np.array(["Action" in g for g in movie_genres]),
    )


def draw_ratings(rng: np.random.Generator, world: PlantedWorld, n: int, span_seconds: int) -> tuple[np.ndarray, ...]:
    """`n` rating events: user and movie indices, ratings 1-5 and seconds in `[0, span_seconds)`, sorted by time.

    Returns:
        `(user_index, movie_index, rating, seconds)`, each `(n,)`.
    """
    u = rng.integers(0, len(world.users), n)
    m = rng.choice(len(world.movies), n, p=world.movie_probability)
    score = (
        3.9
        + world.user_bias[u]
        + world.movie_bias[m]
        + np.sum(world.user_factor[u] * world.movie_factor[m], axis=1)
        + 0.8 * (world.young[u] & world.action[m])
        + rng.normal(0, 0.6, n)
    )
    # The draws are independent, so handing the sorted seconds out in draw order keeps every event random.
    seconds = np.sort(rng.integers(0, span_seconds, n))
    return u, m, np.clip(np.rint(score), 1, 5).astype("int64"), seconds


def generate(
    n_users: int = 200,
    n_movies: int = 150,
    n_events: int = 6000,
    start: str = "1998-01-01",
    days: int = 30,
    seed: int = 0,
) -> RawData:
    """Generate users, movies and rating events spread over `days` days from `start` (UTC), in memory.

    Args:
        n_users: number of users.
        n_movies: number of movies.
        n_events: number of rating events (distinct events are not enforced; `write_folder` enforces them).
        start: first day of events, ISO date.
        days: length of the event window in days.
        seed: random seed; the same seed gives the same tables.

    Returns:
        `RawData` with events sorted by time.
    """
    rng = np.random.default_rng(seed)
    world = plant(rng, n_users, n_movies)
    u, m, rating, seconds = draw_ratings(rng, world, n_events, days * DAY_SECONDS)
    events = pd.DataFrame(
        {
            "user_id": world.users["user_id"].to_numpy()[u],
            "movie_id": world.movies["movie_id"].to_numpy()[m],
            "rating": rating,
            "event_timestamp": pd.Timestamp(start, tz="UTC") + pd.to_timedelta(seconds, unit="s"),
        }
    )
    return RawData(events, world.users, world.movies)


def write_folder(
    out_dir: Path,
    n_events: int,
    n_users: int,
    n_movies: int,
    start: str = "1998-01-01",
    days: int = 30,
    seed: int = 0,
    chunk_events: int = CHUNK_EVENTS,
) -> dict[str, int]:
    """Write a source folder: `events.parquet` (sorted by time, no duplicate events), `users.parquet`, `movies.parquet`.

    Movies are drawn by `rank_popularity` (a realistic long tail) instead of `generate`'s raw Zipf draws; the
    planted ratings are `generate`'s. The window is cut into time slices of at most about `chunk_events` events; each slice is drawn, freed of
    duplicate (user, movie, second) events (redrawn until it holds its share) and appended as parquet row groups,
    so memory holds the profiles and one slice whatever `n_events` is. Each file is written under a temporary
    name and renamed when complete.

    Args:
        out_dir: the folder (created).
        n_events: rating events, exactly.
        n_users: users.
        n_movies: movies.
        start: first day of events, ISO date (UTC).
        days: days of events; the run of logical date `start + days` sees them all.
        seed: random seed; the same arguments give the same files.
        chunk_events: events per slice, at most about.

    Returns:
        Row counts: `events`, `users`, `movies`.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    for name, value in (("n_events", n_events), ("n_users", n_users), ("n_movies", n_movies), ("days", days),
                        ("chunk_events", chunk_events)):  # fmt: skip
        if value <= 0:
            raise ValueError(f"`{name}` must be positive. Received: `{name}={value}`")
    if n_events > n_users * n_movies * days * DAY_SECONDS:
        raise ValueError(f"`n_events={n_events}` exceeds the distinct (user, movie, second) events there can be")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    world = plant(rng, n_users, n_movies)
    world = dataclasses.replace(world, movie_probability=rank_popularity(world.movie_probability, POPULARITY_EXPONENT))
    for name, table in ((USERS_FILE, world.users), (MOVIES_FILE, world.movies)):
        with staged_path(out_dir / name) as staged:
            table.to_parquet(staged, index=False)
    total_seconds = days * DAY_SECONDS
    slices = max(days, math.ceil(n_events / chunk_events))
    edges = np.linspace(0, total_seconds, slices + 1).round().astype("int64")
    counts = rng.multinomial(n_events, np.diff(edges) / total_seconds)
    origin = pd.Timestamp(start, tz="UTC")
    schema = pa.schema([("user_id", pa.string()), ("movie_id", pa.string()), ("rating", pa.int64()),
                        ("event_timestamp", pa.timestamp("us", tz="UTC"))])  # fmt: skip
    written = 0
    with staged_path(out_dir / EVENTS_FILE) as staged, pq.ParquetWriter(staged, schema) as writer:
        for index, (offset, span, count) in enumerate(zip(edges[:-1], np.diff(edges), counts, strict=True)):
            u, m, rating, seconds = _distinct_ratings(rng, world, int(count), int(span))
            stamps = (origin + pd.to_timedelta(seconds + offset, unit="s")).as_unit("us")
            writer.write_table(
                pa.table(
                    {
                        "user_id": pa.array(u + 1).cast(pa.string()),
                        "movie_id": pa.array(m + 1).cast(pa.string()),
                        "rating": pa.array(rating),
                        "event_timestamp": pa.array(stamps, type=schema.field("event_timestamp").type),
                    },
                    schema=schema,
                )
            )
            written += len(u)
            if (index + 1) % max(1, slices // 10) == 0 or index + 1 == slices:
                logger.info("events: %d of %d written (%d of %d slices)", written, n_events, index + 1, slices)
    return {"events": written, "users": n_users, "movies": n_movies}


def rank_popularity(weights: np.ndarray, exponent: float) -> np.ndarray:
    """Shares by Zipf's law over ranks: the movie with the r-th largest weight gets a share proportional to r^-exponent."""
    ranks = np.empty(len(weights))
    ranks[np.argsort(-weights, kind="stable")] = np.arange(1, len(weights) + 1)
    shares = ranks**-exponent
    return shares / shares.sum()


def _distinct_ratings(rng: np.random.Generator, world: PlantedWorld, n: int, span: int) -> tuple[np.ndarray, ...]:
    """`draw_ratings` without duplicate (user, movie, second) events: duplicates are dropped and redrawn."""
    parts = draw_ratings(rng, world, n, span)
    while True:
        u, m, rating, seconds = parts
        order = np.lexsort((m, u, seconds))  # by second, then user, then movie
        u, m, rating, seconds = u[order], m[order], rating[order], seconds[order]
        repeated = np.zeros(len(u), dtype=bool)
        repeated[1:] = (seconds[1:] == seconds[:-1]) & (u[1:] == u[:-1]) & (m[1:] == m[:-1])
        keep = ~repeated
        missing = n - int(keep.sum())
        if missing == 0:
            return u[keep], m[keep], rating[keep], seconds[keep]
        extra = draw_ratings(rng, world, missing, span)
        parts = tuple(np.concatenate([column[keep], more]) for column, more in zip((u, m, rating, seconds), extra,
                                                                                     strict=True))  # fmt: skip


def parse_count(text: str) -> int:
    """A count as typed on a command line: `100000`, `1e7`, `100k`, `10M`, `1G`."""
    match = re.fullmatch(r"\s*([0-9.]+(?:e[0-9]+)?)\s*([kKmMgG]?)\s*", text)
    if not match:
        raise argparse.ArgumentTypeError(f"not a count: {text!r} (e.g. 100000, 1e7, 100k, 10M)")
    value = float(match.group(1)) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[match.group(2).lower()]
    if value != int(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"not a positive whole count: {text!r}")
    return int(value)


def main(argv: list[str] | None = None) -> dict[str, int]:
    """Command line: write a source folder (`write_folder`)."""
    parser = argparse.ArgumentParser(description="Write a synthetic source folder (events, users, movies parquet).")
    parser.add_argument("--events", type=parse_count, required=True, help="rating events (100000, 1e7, 10M)")
    parser.add_argument("--users", type=parse_count, required=True, help="users")
    parser.add_argument("--movies", type=parse_count, required=True, help="movies")
    parser.add_argument("--start", default="1998-01-01", type=pd.Timestamp, help="first day of events, YYYY-MM-DD")
    parser.add_argument("--days", type=int, default=30, help="days of events")
    parser.add_argument("--out", type=Path, required=True, help="folder to write")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--chunk-events", type=parse_count, default=CHUNK_EVENTS, help="events per written slice")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    counts = write_folder(args.out, args.events, args.users, args.movies, args.start.strftime("%Y-%m-%d"),
                          args.days, args.seed, args.chunk_events)  # fmt: skip
    logger.info("Wrote %s to %s", counts, args.out)
    return counts


if __name__ == "__main__":
    main()
