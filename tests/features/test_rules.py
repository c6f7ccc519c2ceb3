"""The data rules are written once and rendered twice: each snapshot rule, broken on one planted row of a good
snapshot, is counted by its SQL over the rows and failed by its Great Expectations expectation."""

from __future__ import annotations

import collections

import duckdb
import numpy as np
import pandas as pd

from deepfm_model.spec.features import LABEL, PICKED, RATING
from feature_repo import validation
from feature_repo.rules import SAMPLED, SNAPSHOT_RULES, SOURCE_RULES, Check, Rule


def _breaking_value(rule: Rule, frame: pd.DataFrame) -> object:
    column = frame[rule.column]
    if rule.check is Check.NOT_NULL:
        return np.nan if column.dtype.kind == "f" else None
    if rule.check is Check.BETWEEN:
        return (rule.high + 1) if rule.high is not None else (rule.low - 1)
    if rule.check is Check.IN_SET:
        return 7 if all(isinstance(v, int) for v in rule.values) else "no-such-code"
    return "Action|Space Opera"  # MATCHES: one genre outside the spec's


def _planted(snapshot: pd.DataFrame) -> pd.DataFrame:
    """The good snapshot (and one good sampled row) followed by one row per rule, each breaking its rule."""
    frame = snapshot.astype({RATING: "float64", LABEL: "float64", PICKED: "float64"})  # room for a NaN
    sampled = frame.iloc[[0]].assign(**{PICKED: float(SAMPLED[1]), RATING: 0.0, LABEL: 0.0})
    frame = pd.concat([frame, sampled], ignore_index=True)
    picks = []
    for rule in SNAPSHOT_RULES:  # a row the rule applies to
        pool = np.flatnonzero(frame[rule.only[0]] == rule.only[1]) if rule.only else np.arange(len(frame))
        picks.append(pool[len(picks) % len(pool)])
    planted = pd.concat([frame, frame.iloc[picks]], ignore_index=True)
    for offset, rule in enumerate(SNAPSHOT_RULES):
        planted.loc[len(frame) + offset, rule.column] = _breaking_value(rule, frame)
    return planted


def _count(con: duckdb.DuckDBPyConnection, table: str, rule: Rule) -> int:
    return con.execute(f"SELECT count(*) FROM {table} WHERE {rule.violated()}").fetchone()[0]


def _expectations() -> list:
    return [rule.expectation() for rule in SNAPSHOT_RULES]


def test_every_snapshot_rule_is_caught_by_its_sql_and_its_expectation(snapshot, tmp_path):
    planted = _planted(snapshot)
    with duckdb.connect() as con:
        con.register("good", planted.iloc[: len(snapshot) + 1])  # the snapshot and its good sampled row
        con.register("planted", planted)
        clean = {r.name: _count(con, "good", r) for r in SNAPSHOT_RULES}
        broken = {r.name: _count(con, "planted", r) for r in SNAPSHOT_RULES}
    assert not any(clean.values()), {name: n for name, n in clean.items() if n}
    assert all(broken.values()), [name for name, n in broken.items() if not n]

    assert validation.run_suites(
        [("snapshot", planted.iloc[: len(snapshot) + 1], _expectations())], tmp_path / "good", "Snapshot", 1
    ).success
    report = validation.run_suites([("snapshot", planted, _expectations())], tmp_path / "bad", "Snapshot", 1)
    failed = collections.Counter(line.split("column='")[1].split("'")[0] for line in report.failures)
    assert failed == collections.Counter(rule.column for rule in SNAPSHOT_RULES), report.summary


def test_the_source_rules_cover_every_key_and_profile_domain():
    names = {table: {rule.name for rule in rules} for table, rules in SOURCE_RULES.items()}
    assert {"null_user_id", "out_of_range_rating", "future_event_timestamp", "unknown_id_movie_id",
            "repeated_user_id_movie_id_event_timestamp"} <= names["events"]  # fmt: skip
    assert {"repeated_user_id", "out_of_range_age", "unknown_gender", "unknown_occupation"} <= names["users"]
    assert {"repeated_movie_id", "out_of_range_release_year", "unknown_genres"} <= names["movies"]
