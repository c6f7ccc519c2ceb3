"""The event stream into Feast: rating events pushed as they happen, and a replayer that pushes the history.

    python -m feature_repo.stream replay --until 1998-04-23                  # MovieLens, the default source
    python -m feature_repo.stream replay --until 2026-01-31 --source-dir DIR  # a folder of tables (raw_source)
    python -m feature_repo.stream push events.jsonl                           # JSON lines; `-` reads stdin

A pushed event is `{"user_id": "196", "movie_id": "242", "rating": 3, "event_timestamp": "1998-04-23T10:00:00Z"}`
(`event_timestamp` in ISO 8601, a zone or UTC; or seconds since the epoch). `EventStream.push` checks each one,
folds the accepted ones onto their users' online state (`fresh_features.fold`), writes the new rows online
through the push source and appends them to the offline log, so the next training set joins exactly what
serving read. An event is refused, with an error that names the field, when a key is missing, the rating is not
an integer from 1 to 5, the timestamp is in the future, or it is older than the user's last event in the store
(the store's window for that user starts there: folding it would rewrite history that serving already read).
A refused event writes nothing; the events after it go on.

`replay` folds the events of a raw source before the cutoff of `--until` (`spec.dates.data_cutoff`) into the
log, day by day and only the days that changed (`fresh_features.update`), then pushes each user's latest row
online: what pushing every event in time order leaves there. The nightly DAG does the same in its `ingest` and
`update_feature_store` tasks.
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
from feast import FeatureStore

from deepfm_model.spec.dates import check_ds, data_cutoff, to_utc
from deepfm_model.spec.features import EVENT_TIMESTAMP, MOVIE_KEY, MOVIE_PROFILE_VIEW, RATING, USER_FRESH_VIEW, USER_KEY
from deepfm_model.spec.raw_data import EVENT_COLUMNS
from feature_repo import fresh_features, raw_source
from feature_repo import store as feature_store
from feature_repo.ingest import PROFILE_TIMESTAMP

logger = logging.getLogger(__name__)

MIN_RATING, MAX_RATING = 1, 5


@dataclass(frozen=True)
class PushResult:
    """What became of one pushed event: `error` is `None` when it was written."""

    index: int
    event: dict
    error: str | None = None


def check_event(record: object, now: pd.Timestamp) -> tuple[dict | None, str | None]:
    """A pushed record as a typed event, or the error that refuses it (naming the field)."""
    if not isinstance(record, dict):
        return None, f"An event must be a JSON object with {list(EVENT_COLUMNS)}. Received: {record!r}"
    for field in EVENT_COLUMNS:
        if record.get(field) is None or str(record[field]).strip() == "":
            return None, f"`{field}` is missing. Received: {record!r}"
    rating = record[RATING]
    if isinstance(rating, bool) or not isinstance(rating, int | float) or rating != int(rating):
        return None, f"`{RATING}` must be an integer from {MIN_RATING} to {MAX_RATING}. Received: `{RATING}={rating!r}`"
    if not MIN_RATING <= rating <= MAX_RATING:
        return None, f"`{RATING}` must be from {MIN_RATING} to {MAX_RATING}. Received: `{RATING}={rating!r}`"
    stamp = record[EVENT_TIMESTAMP]
    try:
        when = pd.Timestamp(stamp, unit="s", tz="UTC") if isinstance(stamp, int | float) else to_utc(stamp)
    except (ValueError, TypeError) as error:
        return None, f"`{EVENT_TIMESTAMP}` is not a timestamp ({error}). Received: `{EVENT_TIMESTAMP}={stamp!r}`"
    if when > now:
        return None, f"`{EVENT_TIMESTAMP}` is in the future (now {now.isoformat()}). Received: {when.isoformat()}"
    event = {USER_KEY: str(record[USER_KEY]), MOVIE_KEY: str(record[MOVIE_KEY]), RATING: int(rating)}
    return {**event, EVENT_TIMESTAMP: when}, None


class EventStream:
    """Pushes rating events into the `user_fresh` view of `store`, online and into the offline log.

    Args:
        store: the feature store, objects applied (and the history replayed, for the users' state).
        clock: the current time, for the future-timestamp check.
    """

    def __init__(self, store: FeatureStore, clock=lambda: pd.Timestamp.now(tz="UTC")) -> None:
        self.store = store
        self.clock = clock
        self.log_dir = feature_store.data_dir(Path(store.repo_path)) / USER_FRESH_VIEW

    def push(self, records: Iterable[object]) -> list[PushResult]:
        """Check, fold and write `records`; one result per record, in order (refused ones carry the error)."""
        now = to_utc(self.clock())
        results, accepted = [], []
        for index, record in enumerate(records):
            event, error = check_event(record, now)
            results.append(PushResult(index, record if event is None else event, error))
            if event is not None:
                accepted.append(index)
        if not accepted:
            return results
        events = pd.DataFrame([results[i].event for i in accepted], index=accepted)
        state = self.online_state(events[USER_KEY].unique().tolist())
        last_event = dict(zip(state[USER_KEY], state[fresh_features.LAST_EVENT], strict=True))  # µs
        too_old = []
        for i, event in events.iterrows():
            previous = last_event.get(event[USER_KEY])
            if previous is not None and event[EVENT_TIMESTAMP].value // 1000 < previous:
                too_old.append(i)
                results[i] = PushResult(i, results[i].event, (
                    f"`{EVENT_TIMESTAMP}` is older than the user's last event in the store "
                    f"({pd.Timestamp(int(previous), unit='us', tz='UTC').isoformat()}): the store's window for user "
                    f"{event[USER_KEY]!r} starts there. Received: {event[EVENT_TIMESTAMP].isoformat()}"))  # fmt: skip
        events = events.drop(index=too_old)
        if events.empty:
            return results
        rows = fresh_features.fold(state, events, self._genres(events[MOVIE_KEY].unique().tolist()))
        fresh_features.write_live(rows, self.log_dir)
        feature_store.push_fresh(self.store, rows.groupby(USER_KEY, sort=False).tail(1))
        return results

    def online_state(self, user_ids: list[str]) -> pd.DataFrame:
        """The users' current `user_fresh` rows online (`fresh_features.LOG_COLUMNS`); absent users are left out."""
        columns = [c for c in fresh_features.LOG_COLUMNS if c not in (USER_KEY, EVENT_TIMESTAMP)]
        state = self.store.get_online_features(
            features=[f"{USER_FRESH_VIEW}:{c}" for c in columns], entity_rows=[{USER_KEY: u} for u in user_ids]
        ).to_df()
        state = state[state[fresh_features.STAMP].notna()].copy()
        stamps = pd.to_datetime(state[fresh_features.STAMP].astype("int64"), unit="us", utc=True)
        state[EVENT_TIMESTAMP] = stamps.astype("datetime64[ns, UTC]")
        return state[list(fresh_features.LOG_COLUMNS)].reset_index(drop=True)

    def _genres(self, movie_ids: list[str]) -> pd.Series:
        """The movies' genres as the online store has them; unknown movies are left out (no genre)."""
        rows = self.store.get_online_features(
            features=[f"{MOVIE_PROFILE_VIEW}:genres"], entity_rows=[{MOVIE_KEY: m} for m in movie_ids]
        ).to_df()
        return pd.Series(rows["genres"].to_numpy(), index=rows[MOVIE_KEY].astype(str).to_numpy(), dtype=object).dropna()


def replay(store: FeatureStore, raw, until: str) -> dict:
    """Fold the events of `raw` before `data_cutoff(until)` into the log and push each user's latest row online.

    Args:
        store: the feature store (objects are applied first).
        raw: a `RawData` or `raw_source.RawSource`; its tables are checked (`raw_source.check`) before anything
            is written.
        until: logical date `YYYY-MM-DD`; events from its 00:00 UTC on are not replayed.

    Returns:
        `days_folded` and `users_pushed`.
    """
    cutoff = data_cutoff(until)
    data_dir = feature_store.data_dir(Path(store.repo_path))
    with raw_source.connect(raw) as con:
        raw_source.check(con)
        folded = fresh_features.update(con, cutoff, data_dir, PROFILE_TIMESTAMP)
    feature_store.apply(store)
    pushed = feature_store.push_fresh(store, fresh_features.latest_state(data_dir / USER_FRESH_VIEW, until=cutoff))
    return {"days_folded": folded, "users_pushed": pushed}


def _records(lines: Iterable[str]) -> Iterable[object]:
    for line in lines:
        if line.strip():
            try:
                yield json.loads(line)
            except json.JSONDecodeError as error:
                yield f"not JSON ({error}): {line.strip()[:80]}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, default=feature_store.REPO_DIR, help="the Feast repo directory")
    commands = parser.add_subparsers(dest="command", required=True)
    replaying = commands.add_parser("replay", help="push the history of a raw source up to a logical date")
    replaying.add_argument("--until", required=True, type=check_ds, help="logical date: events before it")
    replaying.add_argument("--source-dir", type=Path, help="a folder of tables (raw_source); MovieLens if absent")
    replaying.add_argument("--data-cache", type=Path, default=Path("data/movielens"), help="MovieLens cache")
    pushing = commands.add_parser("push", help="push events, one JSON object per line")
    pushing.add_argument("events", nargs="?", default="-", help="a JSON-lines file, or - for stdin")
    pushing.add_argument("--batch", type=int, default=1, help="events checked and written together")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    store = feature_store.open_store(args.repo)
    if args.command == "replay":
        if args.source_dir is not None:
            raw = raw_source.RawSource.from_folder(args.source_dir)
        else:
            from feature_repo import movielens

            raw = movielens.load(args.data_cache)
        print(json.dumps(replay(store, raw, args.until)))
        return 0
    stream = EventStream(store)
    lines = sys.stdin if args.events == "-" else Path(args.events).open()
    refused = written = 0
    batch: list[object] = []
    with lines:
        for record in itertools.chain(_records(lines), [None]):  # lazily: each batch is pushed as it fills
            if record is not None:
                batch.append(record)
            if batch and (record is None or len(batch) >= args.batch):
                for result in stream.push(batch):
                    refused += result.error is not None
                    written += result.error is None
                    if result.error is not None:
                        print(json.dumps({"refused": result.error}), flush=True)
                batch = []
    print(json.dumps({"written": written, "refused": refused}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
