"""The event stream: pushed events reach the online store and the offline log alike; bad events are refused by
name, write nothing, and the events after them still go through (SQLite and Redis online stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from deepfm_model.spec.dates import data_cutoff, last_data_day
from deepfm_model.spec.features import FEATURE_NAMES
from deepfm_model.synthetic import generate
from feature_repo import store, stream
from feature_repo.skew import skew_report

from .conftest import redis_repo, repo_with

DS = "1998-01-20"
NOW = pd.Timestamp("1998-01-20 12:00", tz="UTC")
PROJECT_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def raw():
    return generate(n_users=30, n_movies=20, n_events=600, seed=11)


@pytest.fixture()
def feature_store(raw, tmp_path):
    feature_store = repo_with(raw, DS, tmp_path)
    store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
    return feature_store


def event(user: str, movie: str = "1", rating: object = 4, when: object = "1998-01-20T10:00:00Z") -> dict:
    return {"user_id": user, "movie_id": movie, "rating": rating, "event_timestamp": when}


BAD = [
    ({"movie_id": "1", "rating": 4, "event_timestamp": "1998-01-20T10:00:00Z"}, "`user_id` is missing"),
    ({**event("1"), "movie_id": None}, "`movie_id` is missing"),
    ({**event("1"), "rating": 6}, "`rating` must be from 1 to 5"),
    ({**event("1"), "rating": 3.5}, "`rating` must be an integer"),
    ({**event("1"), "event_timestamp": "1998-02-20T10:00:00Z"}, "`event_timestamp` is in the future"),
    ({**event("1"), "event_timestamp": "yesterday-ish"}, "`event_timestamp` is not a timestamp"),
    ({**event("1"), "event_timestamp": "1997-01-01T00:00:00Z"}, "older than the user's last event"),
]


@pytest.mark.parametrize(("record", "message"), BAD, ids=[m for _, m in BAD])
def test_a_bad_event_is_refused_by_name_writes_nothing_and_the_stream_goes_on(feature_store, record, message):
    events = stream.EventStream(feature_store, clock=lambda: NOW)
    before = events.online_state(["1", "2"])
    results = events.push([record, event("2")])
    assert message in results[0].error
    assert results[1].error is None
    after = events.online_state(["1", "2"])
    pd.testing.assert_frame_equal(after[after["user_id"] == "1"], before[before["user_id"] == "1"])
    assert after.loc[after["user_id"] == "2", "user_fresh_count"].item() == (
        before.loc[before["user_id"] == "2", "user_fresh_count"].item() + 1
    )
    live = pd.concat(pd.read_parquet(p) for p in events.log_dir.glob("live-*.parquet"))
    assert live["user_id"].tolist() == ["2"]


def test_pushed_events_are_online_and_in_the_offline_log_without_skew(feature_store, raw):
    events = stream.EventStream(feature_store, clock=lambda: NOW)
    pushes = [event("3", "1", 5, "1998-01-20T09:00:00Z"), event("3", "2", 1, "1998-01-20T09:00:00Z"),
              event("3", "3", 5, "1998-01-20T11:00:00Z"), event("4", "4", 2, "1998-01-20T11:30:00Z")]  # fmt: skip
    for record in pushes:  # one at a time, as they happen (the first two tie)
        assert events.push([record])[0].error is None
    online = store.online_features(feature_store, "3", ["5"]).iloc[0]
    offline = store.training_frame(
        feature_store,
        pd.DataFrame({"user_id": ["3"], "movie_id": ["5"], "event_timestamp": [NOW], "rating": [5], "label": [1]}),
    ).iloc[0]
    pd.testing.assert_series_equal(online[list(FEATURE_NAMES)], offline[list(FEATURE_NAMES)], check_names=False)
    report = skew_report(feature_store, 100, as_of=NOW)
    assert report["ok"], report
    # An event between the two pushed instants sees the tie's row, not the later one.
    between = store.training_frame(feature_store, pd.DataFrame({"user_id": ["3"], "movie_id": ["5"], "event_timestamp": [
        pd.Timestamp("1998-01-20T10:00:00Z")], "rating": [5], "label": [1]})).iloc[0]  # fmt: skip
    assert between["user_fresh_count"] == online["user_fresh_count"] - 1


def test_pushes_reach_redis(raw, tmp_path):
    with redis_repo(raw, DS, tmp_path) as feature_store:
        store.materialize(feature_store, last_data_day(DS), data_cutoff(DS))
        events = stream.EventStream(feature_store, clock=lambda: NOW)
        before = events.online_state(["5"])["user_fresh_count"].item()
        for when in ("1998-01-20T09:00:00Z", "1998-01-20T09:00:00Z"):  # a tie: Redis keeps only newer stamps
            assert events.push([event("5", when=when)])[0].error is None
        assert events.online_state(["5"])["user_fresh_count"].item() == before + 2
        assert skew_report(feature_store, 60, as_of=NOW)["ok"]


def test_command_line_replays_then_pushes_json_lines(raw, tmp_path):
    source = tmp_path / "source"
    source.mkdir()
    for name in ("events", "users", "movies"):
        getattr(raw, name).to_parquet(source / f"{name}.parquet", index=False)
    repo = tmp_path / "repo"
    store.write_config(repo)
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    command = [sys.executable, "-m", "feature_repo.stream", "--repo", str(repo)]
    replayed = subprocess.run([*command, "replay", "--until", DS, "--source-dir", str(source)], env=env,
                              capture_output=True, text=True, check=True)  # fmt: skip
    assert json.loads(replayed.stdout.strip().splitlines()[-1])["users_pushed"] == len(raw.users)
    lines = "\n".join([json.dumps(event("7", rating=9)), "{not json", json.dumps(event("7", when="1998-01-19T23:00Z"))])
    pushed = subprocess.run([*command, "push", "-"], input=lines, env=env, capture_output=True, text=True, check=True)
    outputs = [json.loads(line) for line in pushed.stdout.strip().splitlines()]
    assert "`rating` must be from 1 to 5" in outputs[0]["refused"]
    assert "not JSON" in outputs[1]["refused"]
    assert outputs[-1] == {"written": 1, "refused": 2}

    # A long-running pusher on a pipe writes each event as it arrives, not at the end of its input.
    pusher = subprocess.Popen([*command, "push", "-"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env,
                              text=True)  # fmt: skip
    try:
        events = stream.EventStream(store.open_store(repo))
        before = events.online_state(["7"])["user_fresh_count"].item()
        pusher.stdin.write(json.dumps(event("7", when="1998-01-20T11:00Z")) + "\n")
        pusher.stdin.flush()
        deadline = time.monotonic() + 120
        while events.online_state(["7"])["user_fresh_count"].item() == before:
            assert pusher.poll() is None and time.monotonic() < deadline, (
                "the event was not pushed while the pipe was open"
            )
            time.sleep(0.2)
    finally:
        pusher.stdin.close()
        assert pusher.wait(timeout=120) == 0
    assert json.loads(pusher.stdout.read().strip().splitlines()[-1]) == {"written": 1, "refused": 0}
