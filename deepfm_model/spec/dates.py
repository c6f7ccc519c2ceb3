"""What a logical date means, in one place.

The run for logical date `ds` (Airflow's `ds`, `YYYY-MM-DD`) sees every rating event strictly before `ds`
00:00 UTC: its last full day of data is the day before `ds`. Every part of the project takes `ds` in this
meaning and derives the window from the functions below, never by adding or subtracting days itself.
"""

from __future__ import annotations

import datetime as dt

import pandas as pd

DateLike = dt.date | dt.datetime | str | pd.Timestamp


def to_utc(stamp: DateLike) -> pd.Timestamp:
    """`stamp` as a UTC timestamp: a naive one is read as UTC, an aware one converted."""
    stamp = pd.Timestamp(stamp)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def day_start(day: DateLike) -> pd.Timestamp:
    """00:00 UTC of the day `day` falls on."""
    return to_utc(day).normalize()


def data_cutoff(ds: DateLike) -> pd.Timestamp:
    """00:00 UTC of the logical date `ds`: the run for `ds` uses events strictly before it."""
    return day_start(ds)


def last_data_day(ds: DateLike) -> pd.Timestamp:
    """00:00 UTC of the last full day of data the run for `ds` sees: the day before `ds`."""
    return data_cutoff(ds) - pd.Timedelta(days=1)


def check_ds(ds: str) -> str:
    """`ds` itself when it is a `YYYY-MM-DD` date; a `ValueError` quoting it otherwise."""
    try:
        parsed = dt.date.fromisoformat(ds)
    except (TypeError, ValueError):
        parsed = None
    if parsed is None or parsed.isoformat() != ds:
        raise ValueError(f"`ds` must be a date as YYYY-MM-DD. Received: `ds={ds!r}`")
    return ds
