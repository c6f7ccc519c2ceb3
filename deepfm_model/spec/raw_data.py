"""The raw tables every source produces: rating events, user profiles, movie profiles.

MovieLens-100K (`movielens.py`) and the synthetic generator (`synthetic.py`) both return a `RawData`, so
everything downstream (ingest, Feast, validation, training) runs unchanged on either.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

EVENT_COLUMNS = ("user_id", "movie_id", "rating", "event_timestamp")
USER_COLUMNS = ("user_id", "age", "gender", "occupation", "zip_code")
MOVIE_COLUMNS = ("movie_id", "title", "release_year", "genres")


@dataclass(frozen=True)
class RawData:
    """Three tables with string ids and UTC timestamps.

    Attributes:
        events: user_id, movie_id (str), rating (int 1-5), event_timestamp (UTC datetime).
        users: user_id (str), age (int), gender (str), occupation (str), zip_code (str).
        movies: movie_id (str), title (str), release_year (float, NaN when unknown),
            genres (str, joined by `features.MULTI_VALUE_SEPARATOR`).
    """

    events: pd.DataFrame
    users: pd.DataFrame
    movies: pd.DataFrame

    def events_before(self, cutoff: pd.Timestamp) -> RawData:
        """The same tables with only the events strictly before `cutoff`."""
        return RawData(self.events[self.events["event_timestamp"] < cutoff].copy(), self.users, self.movies)


def check_columns(frame: pd.DataFrame, columns: tuple[str, ...], table: str) -> None:
    """Raise a `ValueError` naming the columns of `columns` that `frame` lacks."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"Table `{table}` lacks columns {missing}. Received columns: {list(frame.columns)}")
